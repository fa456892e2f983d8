# Deployment targets, included by the Makefile: docker compose for one machine, and Google Cloud
# (Artifact Registry, Cloud Build, Secret Manager, Cloud SQL, Cloud Run, Cloud Scheduler).
# README.md "## Deployment" walks through them in order.
#
# Variables come from the command line, the environment, or .env, else the defaults below. Only the
# names in DEPLOY_VARS are read from .env, and none of them is a secret: secrets go from .env to
# Secret Manager (`make cloud-secrets`, through standard input) and from there to Cloud Run
# (--set-secrets), so make never holds or prints their values.
# Every cloud target first checks the variables it needs, naming each missing one, and runs nothing
# if one is missing.

ENV_FILE ?= .env

DEPLOY_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME ARTIFACT_REPOSITORY IMAGE_TAG ACCOUNT \
	DB_INSTANCE CONNECTION_NAME DB_USERNAME DB_NAME DB_VERSION DB_TIER DB_EDITION \
	RUN_SERVICE_ACCOUNT ALLOW_UNAUTHENTICATED CLOUD_RUN_MAX_INSTANCES EXTRA_ENV_VARS SECRET_PREFIX \
	MIGRATE_JOB_NAME CLOUD_RUN_URL SCHEDULER_JOB_NAME SCHEDULE TIME_ZONE SCHEDULER_SERVICE_ACCOUNT \
	SCHEDULER_ATTEMPT_DEADLINE SCHEDULER_MAX_RETRY_ATTEMPTS SCHEDULER_MIN_BACKOFF SCHEDULER_MAX_BACKOFF \
	SCHEDULER_MAX_DOUBLINGS GENERATOR_SERVICE_NAME CHECKPOINT_DIR RUN_NAME GENERATOR_MEMORY GENERATOR_CPU

define newline


endef
_env_assignments := $(shell awk -v names="$(DEPLOY_VARS)" -f $(dir $(lastword $(MAKEFILE_LIST)))scripts/deploy_env.awk $(ENV_FILE) 2>/dev/null)
$(eval $(subst @NL@,$(newline),$(_env_assignments)))

REGION ?= us-central1
ARTIFACT_REPOSITORY ?= tweet-bot
IMAGE_TAG ?= latest
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT_ID)/$(ARTIFACT_REPOSITORY)/$(DOCKER_INSTANCE_NAME):$(IMAGE_TAG)
# Cloud SQL: the current Postgres on the smallest (shared-core) tier, which needs the Enterprise edition.
DB_NAME ?= tweets
DB_VERSION ?= POSTGRES_18
DB_TIER ?= db-f1-micro
DB_EDITION ?= ENTERPRISE
CONNECTION_NAME ?= $(if $(and $(PROJECT_ID),$(REGION),$(DB_INSTANCE)),$(PROJECT_ID):$(REGION):$(DB_INSTANCE))
# Cloud Run: the service's identity, and who may call it.
RUN_SERVICE_ACCOUNT ?= $(if $(PROJECT_ID),tweet-bot-run@$(PROJECT_ID).iam.gserviceaccount.com)
ALLOW_UNAUTHENTICATED ?= false
CLOUD_RUN_MAX_INSTANCES ?= 2
# More plain settings for the service, e.g. TWEET_ORDER=oldest,TWITTER_DRY_RUN=true
EXTRA_ENV_VARS ?=
MIGRATE_JOB_NAME ?= $(DOCKER_INSTANCE_NAME)-migrate
# Secret Manager: each secret is named $(SECRET_PREFIX)<VARIABLE>, e.g. tweet-bot-SECRET_TOKEN.
SECRET_PREFIX ?= $(DOCKER_INSTANCE_NAME)-
CLOUD_RUN_SECRETS := SECRET_TOKEN DB_PASSWORD CONSUMER_KEY CONSUMER_SECRET ACCESS_KEY ACCESS_SECRET
# Cloud Scheduler: posting is idempotent per scheduled time, so retries are safe.
SCHEDULE ?= 0 9 * * *
TIME_ZONE ?= Etc/UTC
SCHEDULER_SERVICE_ACCOUNT ?= $(if $(PROJECT_ID),tweet-bot-invoker@$(PROJECT_ID).iam.gserviceaccount.com)
SCHEDULER_ATTEMPT_DEADLINE ?= 120s
SCHEDULER_MAX_RETRY_ATTEMPTS ?= 3
SCHEDULER_MIN_BACKOFF ?= 30s
SCHEDULER_MAX_BACKOFF ?= 600s
SCHEDULER_MAX_DOUBLINGS ?= 3
# The generation service (ml/Dockerfile), bundling the run folder $(CHECKPOINT_DIR)/$(RUN_NAME).
GENERATOR_SERVICE_NAME ?= $(if $(DOCKER_INSTANCE_NAME),$(DOCKER_INSTANCE_NAME)-generator)
CHECKPOINT_DIR ?= ml/checkpoint
RUN_NAME ?= run1
GENERATOR_MEMORY ?= 4Gi
GENERATOR_CPU ?= 2
GENERATOR_IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT_ID)/$(ARTIFACT_REPOSITORY)/$(GENERATOR_SERVICE_NAME):$(IMAGE_TAG)
GENERATOR_CONTEXT := build/generator

# Derived values (no trailing slash on the URL; the secret flags from CLOUD_RUN_SECRETS).
service_url = $(patsubst %/,%,$(CLOUD_RUN_URL))
comma := ,
space := $(subst ,, )
secret_refs = $(subst $(space),$(comma),$(strip $(foreach name,$(1),$(name)=$(SECRET_PREFIX)$(name):latest)))
access_secret = gcloud secrets versions access latest --secret=$(SECRET_PREFIX)$(1) --project=$(PROJECT_ID)
# $(call secret_flags,JSON,SECRET): shell that reads SECRET from Secret Manager into a private temporary
# gcloud flags file "$$flags" (JSON with %s where the value goes; removed on exit), so that the value
# never stands in a command line (ps) nor in what make echoes. No comma in JSON: call splits on commas.
secret_flags = flags="$$(mktemp)" && trap 'rm -f "$$flags"' EXIT \
	  && secret="$$($(call access_secret,$(2)))" \
	  && printf '$(1)\n' "$$(printf '%s' "$$secret" | sed 's/[\\"]/\\&/g')" >"$$flags"
auth_flag = $(if $(filter true yes 1,$(ALLOW_UNAUTHENTICATED)),--allow-unauthenticated,--no-allow-unauthenticated)
service_env = ACCOUNT=$(ACCOUNT),CONNECTION_NAME=$(CONNECTION_NAME),DB_USERNAME=$(DB_USERNAME),DB_NAME=$(DB_NAME)$(if $(EXTRA_ENV_VARS),$(comma)$(EXTRA_ENV_VARS))

hint_CONNECTION_NAME := set DB_INSTANCE (with PROJECT_ID and REGION) or CONNECTION_NAME=PROJECT:REGION:INSTANCE
hint_CLOUD_RUN_URL := the service's https://...run.app address, printed by make docker-cloud-run
hint_GENERATOR_SERVICE_NAME := set DOCKER_INSTANCE_NAME (the generation service is then DOCKER_INSTANCE_NAME-generator) or GENERATOR_SERVICE_NAME
# $(call require,VARIABLES): one line per empty variable, then stop before any command of the target runs.
missing = $(strip $(foreach name,$(1),$(if $(strip $($(name))),,$(name))))
require = $(if $(call missing,$(1)),$(foreach name,$(call missing,$(1)),$(info Missing $(name): $(or $(hint_$(name)),set it in .env or on the command line (see .env_reference))))$(error $(words $(call missing,$(1))) variable(s) missing for $@; nothing was run))

SETUP_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY RUN_SERVICE_ACCOUNT SCHEDULER_SERVICE_ACCOUNT
SECRETS_VARS := PROJECT_ID DOCKER_INSTANCE_NAME
POSTGRES_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME DB_INSTANCE DB_USERNAME DB_NAME DB_VERSION DB_TIER DB_EDITION
BUILD_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY DOCKER_INSTANCE_NAME
MIGRATE_VARS := $(BUILD_VARS) CONNECTION_NAME DB_USERNAME DB_NAME RUN_SERVICE_ACCOUNT
RUN_VARS := $(MIGRATE_VARS) ACCOUNT
SCHEDULER_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME SCHEDULER_JOB_NAME CLOUD_RUN_URL SCHEDULE TIME_ZONE SCHEDULER_SERVICE_ACCOUNT
JOB_VARS := PROJECT_ID REGION SCHEDULER_JOB_NAME
GENERATOR_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY GENERATOR_SERVICE_NAME

.PHONY: docker-compose cloud-setup cloud-secrets create-postgres-instance docker-cloud-build cloud-migrate \
	docker-cloud-run docker-cloud-build-run add-scheduler scheduler-pause scheduler-resume scheduler-run-now \
	scheduler-delete generator-context docker-generator docker-cloud-build-generator docker-cloud-run-generator

# ---- one machine ----
docker-compose: ## self-host: Postgres, migrations, the API (127.0.0.1:8080) and the scheduler, from .env
	@test -f .env || { echo "No .env: copy .env_reference to .env and fill in SECRET_TOKEN, ACCOUNT, DB_PASSWORD and the X credentials." >&2; exit 1; }
	docker compose up --build --detach
	docker compose ps

# ---- Google Cloud, in the order of a first deployment ----
cloud-setup: ## enable the APIs; create the image repository and the service accounts with their roles
	@$(call require,$(SETUP_VARS))
	gcloud services enable run.googleapis.com sqladmin.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com secretmanager.googleapis.com cloudscheduler.googleapis.com iam.googleapis.com --project=$(PROJECT_ID)
	gcloud artifacts repositories describe $(ARTIFACT_REPOSITORY) --location=$(REGION) --project=$(PROJECT_ID) >/dev/null 2>&1 \
	  || gcloud artifacts repositories create $(ARTIFACT_REPOSITORY) --repository-format=docker --location=$(REGION) --project=$(PROJECT_ID)
	gcloud iam service-accounts describe $(RUN_SERVICE_ACCOUNT) --project=$(PROJECT_ID) >/dev/null 2>&1 \
	  || gcloud iam service-accounts create $(firstword $(subst @, ,$(RUN_SERVICE_ACCOUNT))) --display-name="tweet bot service" --project=$(PROJECT_ID)
	gcloud iam service-accounts describe $(SCHEDULER_SERVICE_ACCOUNT) --project=$(PROJECT_ID) >/dev/null 2>&1 \
	  || gcloud iam service-accounts create $(firstword $(subst @, ,$(SCHEDULER_SERVICE_ACCOUNT))) --display-name="tweet bot scheduler" --project=$(PROJECT_ID)
	gcloud projects add-iam-policy-binding $(PROJECT_ID) --member=serviceAccount:$(RUN_SERVICE_ACCOUNT) --role=roles/cloudsql.client --condition=None
	gcloud projects add-iam-policy-binding $(PROJECT_ID) --member=serviceAccount:$(RUN_SERVICE_ACCOUNT) --role=roles/secretmanager.secretAccessor --condition=None

cloud-secrets: ## copy SECRET_TOKEN, DB_PASSWORD and the X credentials from .env to Secret Manager (a new version each)
	@$(call require,$(SECRETS_VARS))
	@test -x $(BIN)/python || { echo "No $(BIN)/python: run make venv first." >&2; exit 1; }
	$(BIN)/python scripts/cloud_secrets.py --project=$(PROJECT_ID) --prefix=$(SECRET_PREFIX) --env-file=$(ENV_FILE) $(CLOUD_RUN_SECRETS)

create-postgres-instance: ## create the Cloud SQL instance, its database and user (password from Secret Manager)
	@$(call require,$(POSTGRES_VARS))
	gcloud sql instances create $(DB_INSTANCE) --project=$(PROJECT_ID) --region=$(REGION) \
	  --database-version=$(DB_VERSION) --edition=$(DB_EDITION) --tier=$(DB_TIER)
	gcloud sql databases create $(DB_NAME) --instance=$(DB_INSTANCE) --project=$(PROJECT_ID)
	$(call secret_flags,{"--password": "%s"},DB_PASSWORD) \
	  && gcloud sql users $(if $(filter postgres,$(DB_USERNAME)),set-password,create) $(DB_USERNAME) \
	  --instance=$(DB_INSTANCE) --project=$(PROJECT_ID) --flags-file="$$flags"

docker-cloud-build: ## build the API image with Cloud Build into Artifact Registry
	@$(call require,$(BUILD_VARS))
	gcloud builds submit --project=$(PROJECT_ID) --region=$(REGION) --tag=$(IMAGE) .

cloud-migrate: ## upgrade the Cloud SQL schema: a Cloud Run job from the API image runs alembic upgrade head
	@$(call require,$(MIGRATE_VARS))
	gcloud run jobs deploy $(MIGRATE_JOB_NAME) --project=$(PROJECT_ID) --region=$(REGION) --image=$(IMAGE) \
	  --service-account=$(RUN_SERVICE_ACCOUNT) --set-cloudsql-instances=$(CONNECTION_NAME) \
	  --set-env-vars=CONNECTION_NAME=$(CONNECTION_NAME),DB_USERNAME=$(DB_USERNAME),DB_NAME=$(DB_NAME) \
	  --set-secrets=$(call secret_refs,DB_PASSWORD) \
	  --command=alembic --args=upgrade,head --max-retries=0 --task-timeout=10m --execute-now --wait

docker-cloud-run: ## deploy the API to Cloud Run (Cloud SQL, Secret Manager; authenticated unless ALLOW_UNAUTHENTICATED=true)
	@$(call require,$(RUN_VARS))
	gcloud run deploy $(DOCKER_INSTANCE_NAME) --project=$(PROJECT_ID) --region=$(REGION) --image=$(IMAGE) \
	  --service-account=$(RUN_SERVICE_ACCOUNT) --add-cloudsql-instances=$(CONNECTION_NAME) \
	  --set-env-vars=$(service_env) --set-secrets=$(call secret_refs,$(CLOUD_RUN_SECRETS)) \
	  --max-instances=$(CLOUD_RUN_MAX_INSTANCES) $(auth_flag)
	@echo "CLOUD_RUN_URL=$$(gcloud run services describe $(DOCKER_INSTANCE_NAME) --project=$(PROJECT_ID) --region=$(REGION) --format='value(status.url)')  (put it in .env for make add-scheduler)"

docker-cloud-build-run: ## build, migrate, then deploy (checks every variable first)
	@$(call require,$(sort $(BUILD_VARS) $(MIGRATE_VARS) $(RUN_VARS)))
	$(MAKE) --no-print-directory docker-cloud-build cloud-migrate docker-cloud-run

# The token goes from Secret Manager to gcloud in a private flags file (see secret_flags), and --format
# prints only the job's name: the whole job, which gcloud prints otherwise, holds the header.
add-scheduler: ## create the Cloud Scheduler job: POST $(CLOUD_RUN_URL)/tweet_curated/ on SCHEDULE, with OIDC and x-token
	@$(call require,$(SCHEDULER_VARS))
	gcloud run services add-iam-policy-binding $(DOCKER_INSTANCE_NAME) --project=$(PROJECT_ID) --region=$(REGION) \
	  --member=serviceAccount:$(SCHEDULER_SERVICE_ACCOUNT) --role=roles/run.invoker
	$(call secret_flags,{"--headers": {"x-token": "%s"}},SECRET_TOKEN) \
	  && gcloud scheduler jobs create http $(SCHEDULER_JOB_NAME) --project=$(PROJECT_ID) --location=$(REGION) \
	  --schedule="$(SCHEDULE)" --time-zone="$(TIME_ZONE)" --uri=$(service_url)/tweet_curated/ --http-method=POST \
	  --flags-file="$$flags" \
	  --oidc-service-account-email=$(SCHEDULER_SERVICE_ACCOUNT) --oidc-token-audience=$(service_url) \
	  --attempt-deadline=$(SCHEDULER_ATTEMPT_DEADLINE) --max-retry-attempts=$(SCHEDULER_MAX_RETRY_ATTEMPTS) \
	  --min-backoff=$(SCHEDULER_MIN_BACKOFF) --max-backoff=$(SCHEDULER_MAX_BACKOFF) --max-doublings=$(SCHEDULER_MAX_DOUBLINGS) \
	  --format='value(name)'

scheduler-pause: ## pause the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs pause $(SCHEDULER_JOB_NAME) --project=$(PROJECT_ID) --location=$(REGION)

scheduler-resume: ## resume the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs resume $(SCHEDULER_JOB_NAME) --project=$(PROJECT_ID) --location=$(REGION)

scheduler-run-now: ## run the Cloud Scheduler job once now (posts the next tweet)
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs run $(SCHEDULER_JOB_NAME) --project=$(PROJECT_ID) --location=$(REGION)

scheduler-delete: ## delete the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs delete $(SCHEDULER_JOB_NAME) --project=$(PROJECT_ID) --location=$(REGION) --quiet

# ---- the generation service (TensorFlow; its own image) ----
generator-context: ## stage ml/Dockerfile's build context in build/generator: api/ and ml/ (what git does not ignore), the run CHECKPOINT_DIR/RUN_NAME
	@echo '$(RUN_NAME)' | grep -Eqx '[A-Za-z0-9][A-Za-z0-9._-]*' || { echo "RUN_NAME must be one folder name (letters, digits, . _ -)." >&2; exit 1; }
	@test -f $(CHECKPOINT_DIR)/$(RUN_NAME)/hparams.json || { echo "No run folder $(CHECKPOINT_DIR)/$(RUN_NAME) (hparams.json missing): train one (make train) or set CHECKPOINT_DIR and RUN_NAME." >&2; exit 1; }
	rm -rf $(GENERATOR_CONTEXT)
	mkdir -p $(GENERATOR_CONTEXT)/checkpoint
	sed 's/^ARG RUN_NAME=.*/ARG RUN_NAME=$(RUN_NAME)/' ml/Dockerfile > $(GENERATOR_CONTEXT)/Dockerfile
	cp requirements.txt requirements-ml.txt $(GENERATOR_CONTEXT)/
	git ls-files -z --cached --others --exclude-standard api ml | tar --null -T - -cf - | tar -xf - -C $(GENERATOR_CONTEXT)
	cp -R $(CHECKPOINT_DIR)/$(RUN_NAME) $(GENERATOR_CONTEXT)/checkpoint/$(RUN_NAME)

docker-generator: ## build the generation image locally (tag $(GENERATOR_SERVICE_NAME):local), bundling CHECKPOINT_DIR/RUN_NAME
	@$(call require,GENERATOR_SERVICE_NAME RUN_NAME)
	$(MAKE) --no-print-directory generator-context
	docker build -t $(GENERATOR_SERVICE_NAME):local $(GENERATOR_CONTEXT)

docker-cloud-build-generator: ## build the generation image with Cloud Build (bundles CHECKPOINT_DIR/RUN_NAME)
	@$(call require,$(GENERATOR_VARS) RUN_NAME)
	$(MAKE) --no-print-directory generator-context
	gcloud builds submit $(GENERATOR_CONTEXT) --project=$(PROJECT_ID) --region=$(REGION) --timeout=3600s --tag=$(GENERATOR_IMAGE)

docker-cloud-run-generator: ## deploy the generation service to Cloud Run (authenticated unless ALLOW_UNAUTHENTICATED=true)
	@$(call require,$(GENERATOR_VARS) RUN_SERVICE_ACCOUNT GENERATOR_MEMORY GENERATOR_CPU)
	gcloud run deploy $(GENERATOR_SERVICE_NAME) --project=$(PROJECT_ID) --region=$(REGION) --image=$(GENERATOR_IMAGE) \
	  --service-account=$(RUN_SERVICE_ACCOUNT) --memory=$(GENERATOR_MEMORY) --cpu=$(GENERATOR_CPU) \
	  --max-instances=$(CLOUD_RUN_MAX_INSTANCES) $(auth_flag)
