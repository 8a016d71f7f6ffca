#!/usr/bin/env bash
# Failover benchmark: backend listener killed -> gone from every host's answers, p50 and max; the
# agent's CPU with 100 checked backends. Usage: scripts/bench-failover.sh [TRIALS] (default 20; root)
exec bash "$(dirname "$0")/bench-bed.sh" lbfo-failoverbench "$@"
