#!/usr/bin/env bash
# Failover benchmark: backend listener killed -> gone from every host's answers, p50 and max; the
# agent's CPU with 100 checked backends; then failover as a client sees it: curl through the NSS
# module, requests failed per outage for each check kind (lbfo-clientbench).
# Usage: scripts/bench-failover.sh [TRIALS] (default 20; root)
set -euo pipefail
bash "$(dirname "$0")/bench-bed.sh" lbfo-failoverbench "$@"
bash "$(dirname "$0")/bench-bed.sh" lbfo-clientbench
