#!/usr/bin/env python3
"""A per-stage timeline of calls at c=1, from the scheduler's and the kernel's own records.

Where the time of one call goes between processes and threads (who runs, who wakes whom, which
system call starts when), without any timestamps added to the code. Record while a figure's c=1
round runs (the data on a tmpfs: writing it to the audit disk slows that disk's syncs), e.g.:

    perf record -a -o /dev/shm/c1.data \\
        -e sched:sched_switch,sched:sched_wakeup \\
        -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync,syscalls:sys_enter_pwrite64 \\
        -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev \\
        -e syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_exit_epoll_wait \\
        -e syscalls:sys_enter_futex sleep 0.5
    perf script -i /dev/shm/c1.data -F comm,pid,tid,cpu,time,event,trace > /dev/shm/c1.txt
    python3 bench/trace/timeline.py orch=PID,tool=PID,bench=PID 12.0 3 < /dev/shm/c1.txt

Arguments: the processes to show as `name=pid` (their threads are named `name:tid`), where to
start (ms after the first event) and how many ms to print. Each line: µs from the start, the CPU,
the thread, the event, and for a switch or a wake-up the threads concerned.
"""
import re
import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    procs = {}
    for pair in sys.argv[1].split(","):
        name, _, pid = pair.partition("=")
        if not pid.isdigit():
            sys.exit(f"not name=pid: {pair!r}")
        procs[int(pid)] = name
    start_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    span_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    line_re = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
    switch_re = re.compile(
        r"prev_comm=(.*?) prev_pid=(\d+).*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)"
    )
    wakeup_re = re.compile(r"comm=(.*?) pid=(\d+).*target_cpu=(\d+)")
    process_of = {}  # thread id -> process id, as threads show up
    first = None

    def who(tid: int, comm: str) -> str:
        return f"{procs.get(process_of.get(tid), comm)[:6]}:{tid}"

    for line in sys.stdin:
        m = line_re.match(line)
        if not m:
            continue
        comm, pid, tid, cpu, ts, event, rest = m.groups()
        pid, tid, ts = int(pid), int(tid), float(ts)
        process_of[tid] = pid
        if first is None:
            first = ts
        at_ms = (ts - first) * 1000
        if at_ms < start_ms:
            continue
        if at_ms > start_ms + span_ms:
            break
        event = event.replace("syscalls:sys_", "").replace("sched:sched_", "")
        thread = who(tid, comm)
        if event == "switch":
            s = switch_re.search(rest)
            if not s:
                continue
            prev_comm, prev, state, next_comm, nxt = s.groups()
            prev, nxt = int(prev), int(nxt)
            if process_of.get(prev) not in procs and process_of.get(nxt) not in procs:
                continue
            thread, rest = "", f"{who(prev, prev_comm)}({state}) -> {who(nxt, next_comm)}"
        elif event == "wakeup":
            w = wakeup_re.search(rest)
            if not w:
                continue
            woken_comm, woken, target = w.groups()
            woken = int(woken)
            if process_of.get(woken) not in procs and pid not in procs:
                continue
            rest = f"wakes {who(woken, woken_comm)} on cpu{target}"
        elif pid not in procs:
            continue
        else:
            rest = rest[:50]
        print(f"{(at_ms - start_ms) * 1000:9.1f} c{cpu} {thread:14} {event:20} {rest}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
