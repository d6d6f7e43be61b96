import json, sys, time, gc, resource
from fleet.settings import RunSettings
from orchestrator import architectures
from orchestrator.submit import plan_jobs
from workers.architectures import listing
from workers.core import run_job
found = listing()
cat = architectures.catalog(found, json.load(open(__file__.rsplit("/", 1)[0] + "/results.json"))["classes"])
jobs = plan_jobs("s", cat, None, ["cpu"], RunSettings(variants="flex", time_limit_s=300), pins=[])
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
c0, w0 = cpu(), time.perf_counter(); fw = 0.0; graphs = 0; verdicts = []
for job in jobs:
    r = run_job(job); gc.freeze()
    for v in ((r.get("variants") or {}).get("results") or []):
        if v["variant"] == "flex":
            fw += v.get("wall_s") or 0; graphs += (v.get("compiled") or {}).get("graphs", 0); verdicts.append(v["verdict"])
print(json.dumps({"cpu_s": round(cpu() - c0, 1), "wall_s": round(time.perf_counter() - w0, 1), "flex_wall_s": round(fw, 1), "graphs": graphs, "works": verdicts.count("works"), "n": len(jobs)}))
