"""The tables the digits benches print: each row's mean metrics over seeds, and its difference
from a base row paired by seed, +- one standard error of the mean difference."""
import numpy as np


def paired_difference(results, name, base, metric="map@r"):
    """"+d +- se": row ``name`` minus row ``base`` of ``metric``, paired by seed (``results``:
    {row name: [metrics dict per seed]}, every row over the same seeds in the same order)."""
    diff = np.array([r[metric] for r in results[name]]) - np.array([r[metric] for r in results[base]])
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return f"{diff.mean():+.4f} +- {se:.4f}"


def print_per_seed(results, metric="map@r"):
    width = max(len(name) for name in results) + 2
    print(f"{metric} per seed:")
    for name, runs in results.items():
        print(f"  {name:<{width}}" + " ".join(f"{r[metric]:.3f}" for r in runs))


def print_paired_table(results, base, metrics, paired=("map@r", "recall@1")):
    """Means of ``metrics``, then each of ``paired`` against row ``base``, then map@r per seed."""
    width = max(len(name) for name in results) + 2
    print(f"{'':<{width}}" + "".join(f"{m:>12}" for m in metrics)
          + "".join(f"   {m} - {base}".ljust(24 + len(base)) for m in paired))
    for name, runs in results.items():
        line = f"{name:<{width}}" + "".join(f"{np.mean([r[m] for r in runs]):>12.4f}" for m in metrics)
        line += "".join(f"   {paired_difference(results, name, base, m)}".ljust(24 + len(base)) for m in paired)
        print(line)
    print_per_seed(results)
