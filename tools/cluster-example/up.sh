#!/usr/bin/env bash
# A working three-member JetStream cluster on loopback, to try the cluster deployment on one
# machine (the e2e cluster scenario runs the same): one credentials directory made once (seeds,
# route secret), one configuration per member written by `sysbox-nats-auth init`, three
# nats-server processes in the foreground. Ctrl-C stops them. Then run daemons with
#   --nats-url nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233 --kv-replicas 3
#   --nats-creds <dir>/<identity>.nk
set -euo pipefail
dir=${1:-/tmp/sysbox-cluster-example}
auth=(node "$(dirname "$0")/../../packages/nats-auth/bin/sysbox-nats-auth.js")
mkdir -p "$dir"
routes=()
for i in 1 2 3; do routes+=(--route "127.0.0.1:$((6230 + i))"); done
pids=()
for i in 1 2 3; do
  "${auth[@]}" init --dir "$dir/nats" --node '*' --port $((4230 + i)) --store-dir "$dir/js-$i" \
    --server-name "nats-$i" --cluster-name sysbox --cluster-port $((6230 + i)) "${routes[@]}" \
    --config-name "nats-$i.conf" >/dev/null
  nats-server -c "$dir/nats/nats-$i.conf" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
echo "cluster up: nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233 (credentials in $dir/nats)"
wait
