#!/bin/bash
# usage: run.sh BIN STALLED LABEL  -> appends a JSON line to /tmp/wsb/results.jsonl
bin=$1; stalled=$2; label=$3
dir=$(mktemp -d /tmp/wsb/db.XXXX)
port=$((20000 + RANDOM % 20000))
taskset -c 0 $bin serve --model reactor --listen 127.0.0.1:$port --db $dir/chat.db > $dir/server.log 2>&1 &
spid=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
# warm the history: 200 messages of 4 KB, so the stalled subscribers get a full history
taskset -c 1 $bin load --target 127.0.0.1:$port --json -q --client-threads 1 ws-broadcast --room main -n 10 -m 200 --body-bytes 4000 > /dev/null 2>&1
w0=$(awk '/syscw/{print $2}' /proc/$spid/io); r0=$(awk '/syscr/{print $2}' /proc/$spid/io)
taskset -c 1 $bin load --target 127.0.0.1:$port --json -q --client-threads 1 ws-broadcast --room main -n 100 -m 1500 --body-bytes 4000 --stalled $stalled > $dir/report.json 2>$dir/load.err
w1=$(awk '/syscw/{print $2}' /proc/$spid/io); r1=$(awk '/syscr/{print $2}' /proc/$spid/io)
kill $spid; wait $spid 2>/dev/null
python3 - "$dir/report.json" "$label" "$stalled" $((w1-w0)) $((r1-r0)) <<'PY' >> /tmp/wsb/results.jsonl
import json,sys
r=json.load(open(sys.argv[1]))
print(json.dumps({"label":sys.argv[2],"stalled":int(sys.argv[3]),"syscw":int(sys.argv[4]),"syscr":int(sys.argv[5]),"report":r}))
PY
rm -rf $dir/chat.db*
