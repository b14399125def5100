#!/usr/bin/env python3
"""One core thread of one storage node hangs: what do S3 clients see?

Starts `leofs demo --nodes 3 --replicas 3 --cores 2`, writes 200 small objects, runs four
client threads (PUT then GET of a small object, and every fifth round a ListObjectsV2) through
the gateway, then stops core thread 1 of one storage node with ptrace (the process's other
threads, its core 0 among them, run on) for HANG seconds (default 30), lets it go on, and runs
10 s more. Prints, per operation, the count, p50, p99, max and failures before, in the first
15 s of the hang, in the rest of it, and after. Needs root (ptrace of another process).
MODE=process stops the whole storage process instead (SIGSTOP, then SIGCONT).

Usage: perf/hung_core.py [DIR]   (default /work/tmp/hung-core; LEOFS_BIN, HANG, MODE)
"""
import ctypes, os, re, signal, subprocess, sys, threading, time
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, BotoCoreError

HERE = os.path.dirname(os.path.abspath(__file__))
LEOFS = os.environ.get("LEOFS_BIN", os.path.join(HERE, "..", "target", "release", "leofs"))
DIR = sys.argv[1] if len(sys.argv) > 1 else "/work/tmp/hung-core"
HANG = float(os.environ.get("HANG", "30"))
MODE = os.environ.get("MODE", "core")
subprocess.run(["rm", "-rf", DIR, DIR + ".err"])
demo = subprocess.Popen([LEOFS, "demo", "--nodes", "3", "--replicas", "3", "--cores", "2",
                         "--dir", DIR], stdout=subprocess.PIPE, stderr=open(DIR + ".err", "w"), text=True)
lines = []
for line in demo.stdout:
    lines.append(line)
    if line.startswith("leofs demo ready"):
        break
out = "".join(lines)
ep = re.search(r"S3 endpoints: (.*)", out).group(1).split()[0]
ak = re.search(r"Access key: (\S+)", out).group(1)
sk = re.search(r"Secret key: (\S+)", out).group(1)
cfg = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60, max_pool_connections=20)
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name="us-east-1", config=cfg)
s3.create_bucket(Bucket="hang")
for i in range(200):
    s3.put_object(Bucket="hang", Key=f"k{i}", Body=b"v" * 1000)

pids = subprocess.run(["pgrep", "-f", f"roles storage .*{DIR}"], capture_output=True, text=True).stdout.split()
victim = int(pids[0])
tid = None
for t in os.listdir(f"/proc/{victim}/task"):
    if open(f"/proc/{victim}/task/{t}/comm").read().strip() == "leofs-core-1":
        tid = int(t)
print("victim pid", victim, "thread", tid, flush=True)

libc = ctypes.CDLL("libc.so.6", use_errno=True)
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

stop = threading.Event()
lat = {"get": [], "put": [], "list": []}
fails = {"get": [], "put": [], "list": []}
lock = threading.Lock()
def worker(n):
    i = n
    while not stop.is_set():
        i += 7
        k = f"k{i % 200}"
        for op in ("put", "get") + (("list",) if i % 5 == 0 else ()):
            t0 = time.monotonic()
            try:
                if op == "put":
                    s3.put_object(Bucket="hang", Key=k, Body=b"w" * 1000)
                elif op == "get":
                    s3.get_object(Bucket="hang", Key=k)["Body"].read()
                else:
                    s3.list_objects_v2(Bucket="hang", MaxKeys=50)
                with lock:
                    lat[op].append((t0, time.monotonic() - t0))
            except (ClientError, BotoCoreError) as e:
                with lock:
                    fails[op].append((t0, time.monotonic() - t0, repr(e)[:150]))

def report(label, since, until):
    with lock:
        for op in lat:
            xs = sorted(d for t, d in lat[op] if since <= t < until)
            fs = [f for f in fails[op] if since <= f[0] < until]
            if xs:
                print(f"{label} {op}: n={len(xs)} p50={xs[len(xs)//2]*1000:.1f}ms p99={xs[int(len(xs)*0.99)]*1000:.1f}ms max={xs[-1]*1000:.0f}ms; failed {len(fs)} {fs[:2]}", flush=True)
            else:
                print(f"{label} {op}: none; failed {len(fs)} {fs[:2]}", flush=True)

threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
for t in threads: t.start()
time.sleep(5)
t_hang = time.monotonic()
if MODE == "process":
    os.kill(victim, signal.SIGSTOP)
    print(f"process {victim} stopped", flush=True)
else:
    assert libc.ptrace(PTRACE_SEIZE, tid, None, None) == 0, ctypes.get_errno()
    assert libc.ptrace(PTRACE_INTERRUPT, tid, None, None) == 0, ctypes.get_errno()
    print(f"thread {tid} stopped", flush=True)
time.sleep(HANG)
t_release = time.monotonic()
if MODE == "process":
    os.kill(victim, signal.SIGCONT)
else:
    libc.ptrace(PTRACE_DETACH, tid, None, None)
print("released", flush=True)
time.sleep(10)
stop.set()
for t in threads: t.join()
t_end = time.monotonic()
report("before", 0, t_hang)
report("hang first 15s", t_hang, t_hang + 15)
report("hang rest", t_hang + 15, t_release)
report("after", t_release, t_end)
demo.send_signal(signal.SIGINT)
demo.wait(timeout=60)
subprocess.run(["rm", "-rf", DIR])
