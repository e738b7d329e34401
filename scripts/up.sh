#!/usr/bin/env bash
# Deploy one stack with a single command: create the virtualenv, select or create the stack in a
# state backend inside the repository, set the API metrics token once, then run `pulumi up`.
#
#   MAGFLOW_API_METRICS_TOKEN=... PULUMI_CONFIG_PASSPHRASE=... ./scripts/up.sh dev [pulumi up flags]
#
# State goes to file://<repository>/.pulumi-state unless PULUMI_BACKEND_URL is already set, so the
# user's own `pulumi login` is left unchanged. Every argument after STACK is passed to `pulumi up`.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=magflow-monitoring
MINIMUM_PYTHON=(3 11)

fail() {
    printf 'error: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do
        printf '  %s\n' "$line" >&2
    done
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 STACK [pulumi up flags]

STACK is dev (Docker) or prod (Kubernetes), or any stack with a Pulumi.<STACK>.yaml file.
Flags after STACK go to \`pulumi up\`, such as --yes or --skip-preview.

Environment:
  PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE  passphrase of the stack's secrets (required)
  MAGFLOW_API_METRICS_TOKEN  bearer token for the API's /metrics; stored with --secret on the first run
  PULUMI_BACKEND_URL         state backend; default file://$PWD/.pulumi-state
EOF
}

# Arguments: the stack name first, everything else for `pulumi up`.
if (($# < 1)) || [[ $1 == -h || $1 == --help ]]; then
    usage
    exit 2
fi
stack=$1
shift
stack_file="Pulumi.$stack.yaml"
if [[ ! -f $stack_file ]]; then
    fail "stack file $stack_file not found." \
        "Use dev or prod, or create $stack_file with the stack's config (see Pulumi.dev.yaml)."
fi

# The stack file names the platform, which decides whether Docker or a kubeconfig is needed.
platform=$(sed -n "s/^[[:space:]]*$PROJECT:platform:[[:space:]]*\([a-z]*\).*/\1/p" "$stack_file" | head -n 1)

# Tools first, so a missing one fails before anything is installed or created.
if ! command -v pulumi >/dev/null; then
    fail "the Pulumi CLI (pulumi) was not found on PATH." \
        "Install it: curl -fsSL https://get.pulumi.com | sh  (or see https://www.pulumi.com/docs/install/)"
fi
if ! command -v python3 >/dev/null; then
    fail "python3 was not found on PATH." "Install Python ${MINIMUM_PYTHON[0]}.${MINIMUM_PYTHON[1]} or newer."
fi
if ! python3 -c "import sys; sys.exit(sys.version_info < (${MINIMUM_PYTHON[0]}, ${MINIMUM_PYTHON[1]}))"; then
    fail "python3 is $(python3 -c 'import platform; print(platform.python_version())'), but the program needs ${MINIMUM_PYTHON[0]}.${MINIMUM_PYTHON[1]} or newer." \
        "Install a newer Python and put it first on PATH as python3."
fi

case $platform in
docker)
    if ! command -v docker >/dev/null; then
        fail "stack $stack runs on Docker, but the docker CLI was not found on PATH." \
            "Install Docker Engine: https://docs.docker.com/engine/install/"
    fi
    if ! docker info >/dev/null 2>&1; then
        fail "the Docker engine is not reachable (docker info failed)." \
            "Start it (sudo systemctl start docker), or add your user to the docker group and log in again," \
            "or set DOCKER_HOST to the engine's address."
    fi
    ;;
kubernetes)
    kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
    # KUBECONFIG may list several files separated by ":", and the first one must exist.
    if [[ ! -f ${kubeconfig%%:*} ]]; then
        fail "stack $stack runs on Kubernetes, but no kubeconfig was found at ${kubeconfig%%:*}." \
            "Set KUBECONFIG to the cluster's kubeconfig file, or write it to ~/.kube/config."
    fi
    if command -v kubectl >/dev/null; then
        echo "Kubernetes context: $(kubectl config current-context 2>/dev/null || echo '(none set)')"
    else
        echo "note: kubectl was not found. The deployment uses the current context of ${kubeconfig%%:*}." >&2
    fi
    ;;
*)
    fail "$stack_file has no valid $PROJECT:platform (found '${platform}')." \
        "Add the line '  $PROJECT:platform: docker' (or kubernetes) under config: in $stack_file."
    ;;
esac

# No default passphrase: it encrypts every secret in the stack file and the state.
if [[ -n ${PULUMI_CONFIG_PASSPHRASE_FILE:-} ]]; then
    if [[ ! -s $PULUMI_CONFIG_PASSPHRASE_FILE ]]; then
        fail "PULUMI_CONFIG_PASSPHRASE_FILE=$PULUMI_CONFIG_PASSPHRASE_FILE is missing or empty." \
            "Point it to a file that contains the stack's passphrase."
    fi
elif [[ -z ${PULUMI_CONFIG_PASSPHRASE:-} ]]; then
    fail "PULUMI_CONFIG_PASSPHRASE is not set." \
        "It encrypts the stack's secrets; the first run sets it, later runs need the same value." \
        "Set it for this shell:  read -rsp 'Passphrase: ' PULUMI_CONFIG_PASSPHRASE && export PULUMI_CONFIG_PASSPHRASE" \
        "or keep it in a file:   export PULUMI_CONFIG_PASSPHRASE_FILE=~/.config/magflow/pulumi-passphrase"
fi

# The metrics token is stored once, and later runs keep the encrypted value from the stack file.
# It is checked before anything is installed, so a missing token fails fast.
token_to_store=
if grep -q "^[[:space:]]*$PROJECT:apiMetricsToken:" "$stack_file"; then
    if [[ -n ${MAGFLOW_API_METRICS_TOKEN:-} ]]; then
        printf '%s\n' "note: apiMetricsToken is already set in $stack_file, so MAGFLOW_API_METRICS_TOKEN is ignored." \
            "  To change it: PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$PWD/.pulumi-state} pulumi config set --secret --stack $stack apiMetricsToken" >&2
    fi
elif [[ -n ${MAGFLOW_API_METRICS_TOKEN:-} ]]; then
    token_to_store=$MAGFLOW_API_METRICS_TOKEN
else
    fail "apiMetricsToken is not set in $stack_file, and MAGFLOW_API_METRICS_TOKEN is empty." \
        "It is the bearer token Prometheus sends when it scrapes the API's /metrics. Run:" \
        "  MAGFLOW_API_METRICS_TOKEN=<token> $0 $stack"
fi

# Python environment of the Pulumi program (Pulumi.yaml names .venv as its virtualenv).
if [[ ! -x .venv/bin/python ]]; then
    echo "Creating .venv"
    if ! python3 -m venv .venv; then
        fail "python3 -m venv failed." "On Debian or Ubuntu, install the venv module: sudo apt-get install python3-venv"
    fi
fi
echo "Installing requirements.txt into .venv"
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt

# State backend: a folder inside the repository (ignored by git) unless the caller chose one.
if [[ -z ${PULUMI_BACKEND_URL:-} ]]; then
    mkdir -p .pulumi-state
    export PULUMI_BACKEND_URL="file://$PWD/.pulumi-state"
fi
echo "State backend: $PULUMI_BACKEND_URL"

pulumi stack select --create --secrets-provider passphrase "$stack"

if [[ -n $token_to_store ]]; then
    # Passed on standard input, so the token never appears in the process list.
    printf '%s' "$token_to_store" | pulumi config set --secret --stack "$stack" apiMetricsToken
    echo "Stored apiMetricsToken (encrypted) in $stack_file"
fi

exec pulumi up --stack "$stack" "$@"
