"""Peer for the random-read benchmark: Python's indexed_gzip (Debian
python3-indexed-gzip) on the same layer, the same spacing and the same
offsets. Prints one JSON line: index build seconds, per-read latencies."""
import json
import sys
import time

import indexed_gzip

layer, offsets_file, spacing = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(offsets_file) as f:
    ranges = json.load(f)

started = time.perf_counter()
gz = indexed_gzip.IndexedGzipFile(layer, spacing=spacing)
gz.build_full_index()
build = time.perf_counter() - started

latencies = []
for offset, length in ranges:
    t = time.perf_counter()
    gz.seek(offset)
    data = gz.read(length)
    latencies.append(time.perf_counter() - t)
    assert len(data) == length
print(json.dumps({"build": build, "latencies": latencies, "seekPoints": len(list(gz.seek_points()))}))
