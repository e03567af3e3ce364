#!/usr/bin/env python3
"""Sample every `loadgen api` process: RSS, threads, heap/anon breakdown, cache entries."""
import os, re, sys, time, urllib.request, json
out = open(sys.argv[1], "w")
every = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
t0 = time.time()
def apis():
    res = []
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try:
            cmd = open(f"/proc/{p}/cmdline","rb").read().split(b"\0")
        except Exception: continue
        if len(cmd) > 1 and cmd[0].endswith(b"loadgen") and cmd[1] == b"api":
            admin = cmd[cmd.index(b"--admin-listen")+1].decode()
            res.append((int(p), admin))
    return sorted(res)
def metric(text, name):
    tot = None
    for l in text.splitlines():
        if l.startswith("#"): continue
        k, _, v = l.rpartition(" ")
        if k.split("{")[0] == name:
            tot = (tot or 0) + float(v)
    return tot
def smaps(pid):
    heap = 0; anon64 = 0; anon_other = 0; n64 = 0
    cur = None
    for l in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", l):
            parts = l.split()
            a, b = [int(x, 16) for x in parts[0].split("-")]
            name = parts[5] if len(parts) > 5 else ""
            cur = (b - a, name)
        elif l.startswith("Rss:"):
            kb = int(l.split()[1])
            size, name = cur
            if name == "[heap]": heap += kb
            elif name == "":
                anon_other += kb
        # arenas: 64MiB-aligned anon; just report total anon
    return heap, anon_other
while True:
    t = round(time.time() - t0, 1)
    rows = []
    for pid, admin in apis():
        try:
            st = open(f"/proc/{pid}/status").read()
            rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
            thr = int(re.search(r"Threads:\s+(\d+)", st).group(1))
            heap, anon = smaps(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except Exception:
            continue
        try:
            text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=2).read().decode()
            ent = metric(text, "api_cache_entries"); req = metric(text, "api_requests_total")
            miss = metric(text, "api_cache_misses_total")
        except Exception:
            ent = req = miss = None
        rows.append(dict(pid=pid, rss=rss, thr=thr, heap=heap, anon=anon, fds=fds, entries=ent, req=req, miss=miss))
    out.write(json.dumps(dict(t=t, wall=time.strftime("%H:%M:%S"), inst=rows)) + "\n"); out.flush()
    time.sleep(every)
