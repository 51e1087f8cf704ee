#!/usr/bin/env python3
"""The podman 4.3 variant of deploy/kubernetes/logferry-sidecar.yaml, for `podman kube play`.

podman 4.3 (Debian 12) cannot play the native manifest as it is:
  * an init container with probes is refused ("cannot create an init container that has either of
    lifecycle, livenessProbe, readinessProbe, or startupProbe set"), and it knows no native sidecar
    (restartPolicy: Always on an init container): logferry becomes the first regular container;
  * every probe becomes a /bin/sh healthcheck (exec: `CMD-SHELL <command> || exit 1`; httpGet:
    `curl -f http://localhost:<port>/path`, with port 0 for a named port), which cannot run in the
    shell-less image, and readiness probes are ignored: the probes are left out, and the test runs
    them itself (`podman exec <pod>-logferry <exec command>`, GET 127.0.0.1:<hostPort><path>);
  * a PersistentVolumeClaim document makes a named volume that a second play refuses ("volume with
    name logferry-data already exists"): it is left out; the pod's persistentVolumeClaim volume
    then creates or reuses the named volume logferry-data, which outlives the pod as a claim does.
Besides: the archive sink is a directory sink on a hostPath instead of Azure Blob (no account),
sealed after `--max-age`; the api port gets a hostPort on 127.0.0.1; the platform container is a
busybox writer of job and audit JSON lines. Everything else is the native manifest's, and
`verify()` checks that.

  kube_variant.py [options] > variant.yaml       (or -o FILE; --check FILE: is FILE up to date)
"""
import argparse
import copy
import json
import sys
import tomllib

import yaml

HERE = __import__("pathlib").Path(__file__).resolve().parent
REPO = HERE.parent.parent
NATIVE = REPO / "deploy/kubernetes/logferry-sidecar.yaml"
COMMITTED = REPO / "deploy/kubernetes/podman/logferry-sidecar.yaml"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
ARCHIVE_MOUNT = "/var/lib/logferry-archive"

# The platform: N job and N audit records (an e-mail in each, for the masking), then idle until
# SIGTERM (sh as PID 1 ignores it otherwise and would be killed after the timeout).
WRITER = """\
trap 'exit 0' TERM
i=0
while [ "$i" -lt "$LINES" ]; do
  ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "{\\"ts\\":\\"$ts\\",\\"job_id\\":\\"job-$i\\",\\"status\\":\\"ok\\",\\"user_email\\":\\"user$i@example.com\\"}" >> /var/log/platform/jobs.log
  echo "{\\"ts\\":\\"$ts\\",\\"event\\":\\"login\\",\\"seq\\":$i,\\"actor\\":\\"user$i@example.com\\"}" >> /var/log/platform/audit.log
  i=$((i + 1))
  usleep "$INTERVAL_US"
done
while :; do sleep 1; done
"""


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


def directory_sink(toml_text, max_age):
    """[sinks.archive] as a directory sink at ARCHIVE_MOUNT: its key and generic options kept."""
    lines = toml_text.splitlines(keepends=True)
    start = next(i for i, l in enumerate(lines) if l.strip() == "[sinks.archive]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    generic = ("key", "encoding", "compression", "compression_level", "buffer", "retry",
               "concurrency", "timeout", "rate_limit", "spool_max_bytes")
    body = [f'type = "directory"\n', f'path = "{ARCHIVE_MOUNT}"\n']
    body += [l for l in lines[start + 1:end] if l.split("=")[0].strip() in generic]
    body.append(f'batch = {{ max_age = "{max_age}" }}\n')
    return "".join(lines[:start + 1] + body + lines[end:])


def variant(native, args):
    docs = copy.deepcopy(native)
    out = []
    for d in docs:
        kind = d["kind"]
        if kind == "PersistentVolumeClaim":
            continue
        if kind == "ConfigMap":
            d["data"]["logferry.toml"] = directory_sink(d["data"]["logferry.toml"], args.max_age)
        if kind == "Deployment":
            spec = d["spec"]["template"]["spec"]
            init = spec.pop("initContainers")
            (lf,) = [c for c in init if c["name"] == "logferry"]
            if len(init) > 1:
                spec["initContainers"] = [c for c in init if c["name"] != "logferry"]
            lf.pop("restartPolicy")
            for p in PROBES:
                lf.pop(p, None)
            lf["image"] = args.logferry_image
            if args.host_port:
                api = next(p for p in lf["ports"] if p.get("name") == "api")
                api["hostPort"] = args.host_port
                api["hostIP"] = "127.0.0.1"
            lf["volumeMounts"].append({"name": "archive", "mountPath": ARCHIVE_MOUNT})
            (app,) = [c for c in spec["containers"] if c["name"] == "platform"]
            app["image"] = args.platform_image
            app["command"] = ["/bin/sh", "-c", WRITER]
            app["env"] = [{"name": "LINES", "value": str(args.lines)},
                          {"name": "INTERVAL_US", "value": str(args.interval_ms * 1000)}]
            spec["containers"].insert(0, lf)
            spec["volumes"].append(
                {"name": "archive", "hostPath": {"path": args.archive, "type": "Directory"}})
        out.append(d)
    return out


def verify(native, var):
    """The variant is the native manifest but for the differences the docstring lists."""
    def strip_cm(docs):
        cm = copy.deepcopy(find(docs, "ConfigMap"))
        conf = tomllib.loads(cm["data"].pop("logferry.toml"))
        conf["sinks"].pop("archive")
        return cm, conf

    assert [d["kind"] for d in native if d["kind"] != "PersistentVolumeClaim"] == \
        [d["kind"] for d in var], "same documents, less the claim"
    for kind in ("ServiceAccount",):
        assert find(native, kind) == find(var, kind), kind
    assert strip_cm(native) == strip_cm(var), "ConfigMap: only [sinks.archive] differs"
    sink = tomllib.loads(find(var, "ConfigMap")["data"]["logferry.toml"])["sinks"]["archive"]
    assert sink["type"] == "directory" and sink["path"] == ARCHIVE_MOUNT, sink
    native_sink = tomllib.loads(find(native, "ConfigMap")["data"]["logferry.toml"])["sinks"]["archive"]
    assert sink.get("key") == native_sink.get("key"), "same object keys"

    nd, vd = copy.deepcopy(find(native, "Deployment")), copy.deepcopy(find(var, "Deployment"))
    ns, vs = nd["spec"]["template"]["spec"], vd["spec"]["template"]["spec"]
    (nlf,) = [c for c in ns.pop("initContainers") if c["name"] == "logferry"]
    vlf = vs["containers"].pop(0)
    assert vlf["name"] == "logferry", "logferry is the first container"
    assert nlf.pop("restartPolicy") == "Always"
    for p in PROBES:
        nlf.pop(p, None)
        assert p not in vlf, p
    for c in (nlf, vlf):
        c.pop("image")
        for port in c["ports"]:
            port.pop("hostPort", None)
            port.pop("hostIP", None)
    vlf["volumeMounts"] = [m for m in vlf["volumeMounts"] if m["name"] != "archive"]
    assert nlf == vlf, "logferry container: same args, env, ports, resources, securityContext, mounts"
    vs["volumes"] = [v for v in vs["volumes"] if v["name"] != "archive"]
    for c in ns["containers"] + vs["containers"]:
        for k in ("image", "command", "env"):
            c.pop(k, None)
    assert nd == vd, "the rest of the Deployment is unchanged"


class Literal(str):
    pass


def dump(docs):
    def literal(dumper, s):
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|")

    yaml.add_representer(Literal, literal, Dumper=yaml.SafeDumper)

    def lit(x):
        if isinstance(x, dict):
            return {k: lit(v) for k, v in x.items()}
        if isinstance(x, list):
            return [lit(v) for v in x]
        return Literal(x) if isinstance(x, str) and "\n" in x else x

    head = ("# Generated by scripts/container/kube_variant.py from ../logferry-sidecar.yaml: do not\n"
            "# edit, run it again. The native sidecar in the form podman 4.3's `kube play` runs; the\n"
            "# script's docstring says what differs and why, and checks that nothing else does.\n")
    return head + yaml.dump_all([lit(d) for d in docs], Dumper=yaml.SafeDumper, sort_keys=False,
                                width=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--native", default=str(NATIVE))
    ap.add_argument("--logferry-image", default="localhost/logferry:latest")
    ap.add_argument("--platform-image", default="localhost/logferry-busybox:latest")
    ap.add_argument("--archive", default="/var/tmp/logferry-archive",
                    help="host directory for the archive (must exist, writable by 65532)")
    ap.add_argument("--host-port", type=int, default=18686, help="0: no hostPort")
    ap.add_argument("--lines", type=int, default=20, help="records of each kind the writer writes")
    ap.add_argument("--interval-ms", type=int, default=50)
    ap.add_argument("--max-age", default="1s", help="the archive sink's batch.max_age")
    ap.add_argument("-o", "--output")
    ap.add_argument("--check", metavar="FILE", nargs="?", const=str(COMMITTED),
                    help="exit 1 unless FILE (default: the committed variant) is what the "
                         "options generate")
    ap.add_argument("--probes", action="store_true",
                    help="print the native sidecar's probes as JSON (for the test to run them)")
    args = ap.parse_args()

    native = load(args.native)
    if args.probes:
        spec = find(native, "Deployment")["spec"]["template"]["spec"]
        (lf,) = [c for c in spec["initContainers"] if c["name"] == "logferry"]
        json.dump({p: lf[p] for p in PROBES if p in lf} | {"ports": lf.get("ports", [])},
                  sys.stdout, indent=1)
        print()
        return 0
    var = variant(native, args)
    verify(native, var)
    text = dump(var)
    verify(native, load_text(text))
    if args.check:
        with open(args.check) as f:
            if f.read() != text:
                print(f"{args.check} is out of date: run {sys.argv[0]} -o {args.check}",
                      file=sys.stderr)
                return 1
        return 0
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def load_text(text):
    return [d for d in yaml.safe_load_all(text) if d]


if __name__ == "__main__":
    sys.exit(main())
