"""How fast StreetScenes renders, on one core.

    python scripts/benchmark_data.py [--scenes 500]

Renders scenes at each size with one thread and writes
reports/benchmarks/data_speed.json (with provenance). The README quotes it.
"""
import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from labkit.data import StreetScenes  # noqa: E402
from labkit.train import REPO_ROOT, provenance, write_metrics  # noqa: E402


def scenes_per_second(size, count: int) -> float:
    ds = StreetScenes(size=size, length=count + 1)
    ds[count]   # warm the texture cache for this size
    began = time.perf_counter()
    for i in range(count):
        ds[i]
    return count / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    results = {}
    for size in [(32, 64), (64, 128), (128, 256), (256, 512)]:
        count = max(20, args.scenes * 64 * 128 // (size[0] * size[1]))
        results[f"{size[0]}x{size[1]}"] = round(scenes_per_second(size, count), 1)
        print(f"{size[0]}×{size[1]}: {results[f'{size[0]}x{size[1]}']} scenes/s ({count} scenes)")
    path = write_metrics(REPO_ROOT / "reports" / "benchmarks" / "data_speed.json", {"scenes_per_second": results},
                         provenance("benchmark", 0, "cpu", time.perf_counter() - began, threads_used=1))
    print("wrote", path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
