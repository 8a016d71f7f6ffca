#!/usr/bin/env bash
# Cluster benchmark: propagation over a 4-host bed, convergence of 16 agents under 20% loss.
# Usage: scripts/bench-cluster.sh [COMMANDS]   (default 400 propagation samples; root)
exec bash "$(dirname "$0")/bench-bed.sh" lbfo-clusterbench "$@"
