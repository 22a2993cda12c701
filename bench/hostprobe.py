"""hostprobe.py - the host probe of bench/hostprobe.c for the Python benchmark
scripts: bench/hostprobe.sh builds it and exports its path as ASPEN_HOSTPROBE."""
import os
import subprocess


def host_scaling():
    """(two-thread FMA scaling, cache-line round trip ns) of the host right now
    (bench/hostprobe.c), or None."""
    probe = os.environ.get("ASPEN_HOSTPROBE")
    if not probe:
        return None
    try:
        out = subprocess.run([probe], check=True, capture_output=True, text=True).stdout
        ratio, ns = out.split()
        return float(ratio), float(ns)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def scaling_str(s):
    if s is None:
        return "host probe ?"
    return "host: 2-thread scaling %.2f, round trip %.0f ns" % s
