"""Random 4 KiB preads of one file by N processes at once.

usage: random_reads.py FILE READERS OPS_PER_READER SEED
Each reader opens the file itself, asks for no readahead (POSIX_FADV_RANDOM)
and times every pread. Prints one JSON line: ops, wall seconds, p50/p99 us.
"""
import json, os, random, sys, time

path, readers, ops, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
size = os.stat(path).st_size
pages = size // 4096

def reader(i, w):
    rnd = random.Random(seed * 1000 + i)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    lat = []
    for _ in range(ops):
        off = rnd.randrange(pages) * 4096
        t = time.perf_counter_ns()
        if len(os.pread(fd, 4096, off)) != 4096:
            raise SystemExit("short read")
        lat.append(time.perf_counter_ns() - t)
    os.close(fd)
    os.write(w, json.dumps(lat).encode() + b"\n")
    os.close(w)

pipes = []
start = time.perf_counter()
for i in range(readers):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            reader(i, w)
        finally:
            os._exit(0)
    os.close(w)
    pipes.append((pid, r))
lat = []
for pid, r in pipes:
    with os.fdopen(r, "rb") as f:
        lat.extend(json.loads(f.read()))
    os.waitpid(pid, 0)
wall = time.perf_counter() - start
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * (len(lat) - 1)))] / 1000
print(json.dumps({"ops": len(lat), "wall": wall, "p50": q(0.5), "p99": q(0.99)}))
