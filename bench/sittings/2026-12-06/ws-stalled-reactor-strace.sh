bin=$1; stalled=$2
dir=$(mktemp -d /tmp/wsb/st.XXXX); port=$((20000 + RANDOM % 20000))
taskset -c 0 $bin serve --model reactor --listen 127.0.0.1:$port --db $dir/chat.db > $dir/server.log 2>&1 &
spid=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
taskset -c 1 $bin load --target 127.0.0.1:$port -q --client-threads 1 ws-broadcast --room main -n 10 -m 200 --body-bytes 4000 > /dev/null 2>&1
strace -f -c -e trace=write,writev,sendto,sendmsg,read,recvfrom -p $spid -o $dir/strace.txt &
stp=$!; sleep 0.5
taskset -c 1 $bin load --target 127.0.0.1:$port --json -q --client-threads 1 ws-broadcast --room main -n 100 -m 1500 --body-bytes 4000 --stalled $stalled > $dir/report.json 2>$dir/load.err
curl -s http://127.0.0.1:$port/metrics | grep -i "subscri\|disconnect\|slow" | head
kill -INT $stp; wait $stp; kill $spid; wait $spid 2>/dev/null
cat $dir/strace.txt
