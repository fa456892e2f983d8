# Deployment targets, included by the Makefile: docker compose for one machine, and Google Cloud
# (Artifact Registry, Cloud Build, Secret Manager, Cloud SQL, Cloud Run, Cloud Scheduler).
# README.md "## Deployment" walks through them in order.
#
# Variables come from the command line, the environment, or .env, else the defaults below. Only the
# names in DEPLOY_VARS and each bot's BOT_<NAME>_ settings (below) are read from .env, and none of them
# is a secret: secrets go from .env to Secret Manager (`make cloud-secrets`, through standard input)
# and from there to Cloud Run (--set-secrets), so make never holds or prints their values.
# Values are taken literally, wherever they come from: make expands nothing in them, and each reaches
# the shell single-quoted ($(call q,...)), so it is one argument (or part of one) and nothing in it runs.
# Every cloud target first checks the variables it needs, naming each missing one, and every value
# of a known shape (SHAPED_VARS: names, regions, accounts, ...), and runs nothing if one is wrong.
# Needs bash (the Makefile's SHELL): quoting uses $'\n' and the shape checks [[ =~ ]].

ENV_FILE ?= .env

DEPLOY_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME ARTIFACT_REPOSITORY IMAGE_TAG ACCOUNT \
	DB_INSTANCE CONNECTION_NAME DB_USERNAME DB_NAME DB_VERSION DB_TIER DB_EDITION \
	RUN_SERVICE_ACCOUNT ALLOW_UNAUTHENTICATED CLOUD_RUN_MAX_INSTANCES EXTRA_ENV_VARS SECRET_PREFIX \
	MIGRATE_JOB_NAME CLOUD_RUN_URL SCHEDULER_JOB_NAME SCHEDULE TIME_ZONE SCHEDULER_SERVICE_ACCOUNT \
	SCHEDULER_ATTEMPT_DEADLINE SCHEDULER_MAX_RETRY_ATTEMPTS SCHEDULER_MIN_BACKOFF SCHEDULER_MAX_BACKOFF \
	SCHEDULER_MAX_DOUBLINGS GENERATOR_SERVICE_NAME CHECKPOINT_DIR RUN_NAME GENERATOR_MEMORY GENERATOR_CPU \
	BOTS DESTINATIONS MASTODON_API_BASE_URL MASTODON_MAX_CHARACTERS BLUESKY_HANDLE BLUESKY_PDS_URL

define newline


endef
comma := ,
space := $(subst ,, )
# $(call q,TEXT): TEXT as one single-quoted bash word (a quote as '\'', a newline as $'\n').
q = '$(subst $(newline),'$$'\n'',$(subst ','\'',$(1)))'
# $(call path_arg,PATH): PATH quoted, with ./ before a relative one so that it never reads as an option.
path_arg = $(call q,$(if $(filter /%,$(firstword $(1))),,./)$(1))

# Make would expand $ in values from the command line and the environment: $(call take_literally,NAMES)
# keeps those as typed. (Called once more after the defaults, for the variables below.)
take_literally = $(foreach name,$(1),\
	$(if $(filter command environment,$(firstword $(origin $(name)))),$(eval override $(name) := $$(value $(name)))))
$(call take_literally,ENV_FILE)

# .env: scripts/deploy_env.awk writes make text in which $, # and @ stand as $$, $(env_hash) and
# $(env_at), each value between two $(env_edge), so that no value is read as make syntax.
env_hash := \#
env_at := @
env_edge :=
deploy_env_awk := $(dir $(lastword $(MAKEFILE_LIST)))scripts/deploy_env.awk
# $(call read_env_file,NAMES): define those of NAMES that .env sets (and make has no value for).
read_env_file = $(eval $(subst @NL@,$(newline),$(shell awk -v names=$(call q,$(1)) \
	-f $(call q,$(deploy_env_awk)) $(call path_arg,$(ENV_FILE)) 2>/dev/null)))
$(call read_env_file,$(DEPLOY_VARS))

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
# More plain settings for the service, e.g. TWEET_ORDER=oldest,TWITTER_DRY_RUN=true: a --set-env-vars
# list of its own, in gcloud's syntax (`^;^A=1,2;B=3` splits on ; instead of commas).
EXTRA_ENV_VARS ?=
MIGRATE_JOB_NAME ?= $(if $(DOCKER_INSTANCE_NAME),$(DOCKER_INSTANCE_NAME)-migrate)
# Secret Manager: each secret is named $(SECRET_PREFIX)<VARIABLE>, e.g. tweet-bot-SECRET_TOKEN.
SECRET_PREFIX ?= $(if $(DOCKER_INSTANCE_NAME),$(DOCKER_INSTANCE_NAME)-)
# Cloud Scheduler: posting is idempotent per scheduled time, so retries are safe.
# (A bot of BOTS reads its own BOT_<NAME>_SCHEDULE, else these defaults, as core/config.py's BotSettings does.)
DEFAULT_SCHEDULE := 0 9 * * *
DEFAULT_TIME_ZONE := Etc/UTC
SCHEDULE ?= $(DEFAULT_SCHEDULE)
TIME_ZONE ?= $(DEFAULT_TIME_ZONE)
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
$(call take_literally,$(DEPLOY_VARS) IMAGE GENERATOR_IMAGE GENERATOR_CONTEXT CLOUD_RUN_SECRETS BOT)

# Where a bot posts: settings make passes to Cloud Run (each bot's, with BOTS; else the plain ones).
BOT_ENV_VARS := DESTINATIONS MASTODON_API_BASE_URL MASTODON_MAX_CHARACTERS BLUESKY_HANDLE BLUESKY_PDS_URL

# Values of a known shape: shape_NAME matches the whole value (bash extended regular expression),
# about_NAME says what it must be. Names become positional arguments, image hosts and items of gcloud
# lists, where a leading -, a / or a comma would change what the command does.
SHAPED_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME ARTIFACT_REPOSITORY IMAGE_TAG ACCOUNT DB_INSTANCE \
	CONNECTION_NAME DB_USERNAME DB_NAME RUN_SERVICE_ACCOUNT ALLOW_UNAUTHENTICATED SECRET_PREFIX \
	MIGRATE_JOB_NAME CLOUD_RUN_URL SCHEDULER_JOB_NAME SCHEDULER_SERVICE_ACCOUNT GENERATOR_SERVICE_NAME \
	RUN_NAME CLOUD_RUN_SECRETS BOTS BOT $(BOT_ENV_VARS)
resource_name := [a-z]([-a-z0-9]{0,61}[a-z0-9])?
about_resource_name := lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen (at most 63)
service_account := [a-z0-9][-a-z0-9]{0,62}@[a-z0-9][-a-z0-9.]*
about_service_account := a service account email, NAME@PROJECT.iam.gserviceaccount.com
database_name := [A-Za-z_][-A-Za-z0-9_.]{0,62}
about_database_name := letters, digits, _ . and -, starting with a letter or _ (at most 63)
shape_PROJECT_ID := [a-z][-a-z0-9]{4,28}[a-z0-9]
about_PROJECT_ID := a project id: 6-30 lowercase letters, digits and hyphens, starting with a letter
shape_REGION := [a-z]+(-[a-z]+)+[0-9]+
about_REGION := a region such as us-central1 or europe-west1
shape_DOCKER_INSTANCE_NAME := $(resource_name)
about_DOCKER_INSTANCE_NAME := a Cloud Run service name: $(about_resource_name)
shape_ARTIFACT_REPOSITORY := $(resource_name)
about_ARTIFACT_REPOSITORY := a repository name: $(about_resource_name)
shape_IMAGE_TAG := [A-Za-z0-9_][-A-Za-z0-9_.]{0,127}
about_IMAGE_TAG := an image tag: letters, digits, _ . and -, not starting with . or - (at most 128)
shape_ACCOUNT := @?[A-Za-z0-9_]{1,15}
about_ACCOUNT := an X handle: 1-15 letters, digits or underscores
shape_DB_INSTANCE := $(resource_name)
about_DB_INSTANCE := a Cloud SQL instance name: $(about_resource_name)
shape_CONNECTION_NAME := [-a-z0-9.]+(:[-a-z0-9.]+){2,3}
about_CONNECTION_NAME := PROJECT:REGION:INSTANCE (lowercase letters, digits, hyphens and dots)
shape_DB_USERNAME := $(database_name)
about_DB_USERNAME := a database user name: $(about_database_name)
shape_DB_NAME := $(database_name)
about_DB_NAME := a database name: $(about_database_name)
shape_RUN_SERVICE_ACCOUNT := $(service_account)
about_RUN_SERVICE_ACCOUNT := $(about_service_account)
shape_ALLOW_UNAUTHENTICATED := true|false|yes|no|1|0
about_ALLOW_UNAUTHENTICATED := true or false (or yes/no, 1/0)
shape_SECRET_PREFIX := [-A-Za-z0-9_]{1,200}
about_SECRET_PREFIX := the start of Secret Manager ids: letters, digits, _ and -
shape_MIGRATE_JOB_NAME := $(resource_name)
about_MIGRATE_JOB_NAME := a Cloud Run job name: $(about_resource_name)
shape_CLOUD_RUN_URL := https://[-A-Za-z0-9.]+(:[0-9]+)?(/[-A-Za-z0-9._~/]*)?
about_CLOUD_RUN_URL := the service's https:// address, such as https://tweet-bot-abc123-ew.a.run.app
shape_SCHEDULER_JOB_NAME := [A-Za-z0-9_][-A-Za-z0-9_]{0,499}
about_SCHEDULER_JOB_NAME := a Cloud Scheduler job name: letters, digits, _ and -, not starting with - (at most 500)
shape_SCHEDULER_SERVICE_ACCOUNT := $(service_account)
about_SCHEDULER_SERVICE_ACCOUNT := $(about_service_account)
shape_GENERATOR_SERVICE_NAME := $(resource_name)
about_GENERATOR_SERVICE_NAME := a Cloud Run service name: $(about_resource_name)
shape_RUN_NAME := [A-Za-z0-9][-A-Za-z0-9._]*
about_RUN_NAME := one folder name (letters, digits, . _ and -, not starting with . or -)
shape_CLOUD_RUN_SECRETS := [A-Z_][A-Z0-9_]*( +[A-Z_][A-Z0-9_]*)*
about_CLOUD_RUN_SECRETS := variable names (capitals, digits, _) separated by spaces
bot_name := [A-Za-z0-9_]{1,15}
shape_BOTS := $(bot_name)(,$(bot_name))*
about_BOTS := bot names (1-15 letters, digits or underscores) separated by commas, without spaces
shape_BOT := $(bot_name)
about_BOT := a bot's name, one of BOTS: 1-15 letters, digits or underscores
# Where a bot posts: these reach Cloud Run in a ;-separated --set-env-vars list (env_flags), so no ; nor space.
shape_DESTINATIONS := (x|mastodon|bluesky)(,(x|mastodon|bluesky))*
about_DESTINATIONS := x, mastodon and/or bluesky, separated by commas, without spaces
shape_MASTODON_API_BASE_URL := https?://[-A-Za-z0-9.:_~/%]+
about_MASTODON_API_BASE_URL := the instance's address, such as https://mastodon.social
shape_MASTODON_MAX_CHARACTERS := [0-9]{1,6}
about_MASTODON_MAX_CHARACTERS := a number of characters, such as 500
shape_BLUESKY_HANDLE := @?[A-Za-z0-9][-A-Za-z0-9.]*
about_BLUESKY_HANDLE := a Bluesky handle such as name.bsky.social
shape_BLUESKY_PDS_URL := $(shape_MASTODON_API_BASE_URL)
about_BLUESKY_PDS_URL := the PDS's address, such as https://bsky.social

# Derived values (no trailing slash on the URL; the secret flags from CLOUD_RUN_SECRETS).
service_url = $(patsubst %/,%,$(CLOUD_RUN_URL))
secret_refs = $(subst $(space),$(comma),$(strip $(foreach name,$(1),$(name)=$(SECRET_PREFIX)$(name):latest)))
access_secret = gcloud secrets versions access latest --secret=$(call q,$(SECRET_PREFIX)$(1)) --project=$(call q,$(PROJECT_ID))
# $(call secret_flags,JSON,SECRET): shell that reads SECRET from Secret Manager into a private temporary
# gcloud flags file "$$flags" (JSON with %s where the value goes; removed on exit), so that the value
# never stands in a command line (ps) nor in what make echoes. No comma in JSON: call splits on commas.
secret_flags = flags="$$(mktemp)" && trap 'rm -f "$$flags"' EXIT \
	  && secret="$$($(call access_secret,$(2)))" \
	  && printf '$(1)\n' "$$(printf '%s' "$$secret" | sed 's/[\\"]/\\&/g')" >"$$flags"
auth_flag = $(if $(filter true yes 1,$(ALLOW_UNAUTHENTICATED)),--allow-unauthenticated,--no-allow-unauthenticated)
# The service's settings; EXTRA_ENV_VARS is a second list (gcloud merges them; a name in both is an error).
service_env = $(if $(ACCOUNT),ACCOUNT=$(ACCOUNT)$(comma))CONNECTION_NAME=$(CONNECTION_NAME),DB_USERNAME=$(DB_USERNAME),DB_NAME=$(DB_NAME)
env_flags = --set-env-vars=$(call q,$(service_env))$(if $(bot_env), --set-env-vars=$(call q,^;^$(subst $(space),;,$(bot_env))))$(if $(strip $(EXTRA_ENV_VARS)), --set-env-vars=$(call q,$(EXTRA_ENV_VARS)))

hint_CONNECTION_NAME := set DB_INSTANCE (with PROJECT_ID and REGION) or CONNECTION_NAME=PROJECT:REGION:INSTANCE
hint_CLOUD_RUN_URL := the service's https://...run.app address, printed by make docker-cloud-run
hint_GENERATOR_SERVICE_NAME := set DOCKER_INSTANCE_NAME (the generation service is then DOCKER_INSTANCE_NAME-generator) or GENERATOR_SERVICE_NAME
missing = $(strip $(foreach name,$(1),$(if $(strip $($(name))),,$(name))))
# $(call malformed,VARIABLES): those set to a value not of their shape, found by one bash run in the C locale.
malformed = $(shell LC_ALL=C; $(foreach name,$(1),$(if $(strip $($(name))),\
	re=$(call q,^($(shape_$(name)))$$); [[ $(call q,$($(name))) =~ $$re ]] || echo $(name);)))
# $(call require,VARIABLES): one line per empty one of VARIABLES and per malformed one of SHAPED_VARS,
# then stop before any command of the target runs.
require = $(call refuse,$(call missing,$(1)),$(call malformed,$(SHAPED_VARS)))
refuse = $(call say_missing,$(1))$(call say_malformed,$(2))$(if $(1)$(2),$(error $(words $(1) $(2)) variable(s) to fix for $@; nothing was run))
say_missing = $(foreach name,$(1),$(info Missing $(name): $(or $(hint_$(name)),set it in .env or on the command line (see .env_reference))))
say_malformed = $(foreach name,$(1),$(info $(name) must be $(about_$(name))))
# After require (BOT has its shape): with BOT=NAME, NAME must be one of BOTS (with one bot, its ACCOUNT),
# or the job would post for no bot.
require_known_bot = $(if $(BOT),$(if $(filter $(BOT),$(or $(bot_names),$(patsubst @%,%,$(ACCOUNT)))),,\
	$(info BOT must be one of $(if $(BOTS),BOTS ($(BOTS)),ACCOUNT ($(ACCOUNT)), the one bot))$(error 1 variable(s) to fix for $@; nothing was run)))

# ---- several bots (BOTS=alice,bob): bot NAME's settings are BOT_<NAME>_<VARIABLE> (core/config.py BotSettings) ----
# Read from .env (or the command line, the environment) once BOTS and BOT have their shape: each bot's
# BOT_ENV_VARS (passed to Cloud Run), and its SCHEDULE and TIME_ZONE (for add-scheduler BOT=NAME).
# A bot's credentials come from Secret Manager: those of the networks in its DESTINATIONS (default x).
secrets_x := CONSUMER_KEY CONSUMER_SECRET ACCESS_KEY ACCESS_SECRET
secrets_mastodon := MASTODON_ACCESS_TOKEN
secrets_bluesky := BLUESKY_APP_PASSWORD
upper = $(shell printf '%s' $(call q,$(1)) | LC_ALL=C tr a-z A-Z)
bot_names := $(if $(call malformed,BOTS),,$(subst $(comma), ,$(BOTS)))
bot_prefix = BOT_$(call upper,$(1))_
# The bots' prefixes, BOT_ALICE_ BOT_BOB_ (none without BOTS: the one bot's variables have no prefix), and BOT's.
bot_prefixes := $(foreach name,$(bot_names),$(call bot_prefix,$(name)))
named_bot_prefix := $(if $(and $(BOT),$(BOTS),$(if $(call malformed,BOT),,ok)),$(call bot_prefix,$(BOT)))
bot_variables := $(sort $(foreach prefix,$(bot_prefixes) $(named_bot_prefix),$(addprefix $(prefix),$(BOT_ENV_VARS) SCHEDULE TIME_ZONE)))
$(call read_env_file,$(bot_variables))
$(call take_literally,$(bot_variables))
$(foreach prefix,$(bot_prefixes),$(foreach name,$(BOT_ENV_VARS),\
	$(eval shape_$(prefix)$(name) = $$(shape_$(name)))$(eval about_$(prefix)$(name) = $$(about_$(name)))))
SHAPED_VARS += $(foreach prefix,$(bot_prefixes),$(addprefix $(prefix),$(BOT_ENV_VARS)))
# $(call bot_secrets,PREFIX): the variables holding the credentials of the networks a bot posts to.
bot_secrets = $(foreach network,$(subst $(comma), ,$(or $($(1)DESTINATIONS),x)),$(addprefix $(1),$(secrets_$(network))))
# Secret Manager -> Cloud Run (--set-secrets), and what make cloud-secrets copies there from .env.
CLOUD_RUN_SECRETS := $(strip SECRET_TOKEN DB_PASSWORD $(if $(bot_prefixes),$(foreach prefix,$(bot_prefixes),$(call bot_secrets,$(prefix))),$(call bot_secrets,)))
$(call take_literally,CLOUD_RUN_SECRETS)
# The bots' settings for Cloud Run: BOTS and each bot's BOT_ENV_VARS that are set, in gcloud's ^;^ syntax
# (DESTINATIONS and BOTS hold commas). Nothing when none is set, as for one bot before there were several.
bot_env_names := $(if $(bot_prefixes),$(foreach prefix,$(bot_prefixes),$(addprefix $(prefix),$(BOT_ENV_VARS))),$(BOT_ENV_VARS))
bot_env = $(strip $(if $(BOTS),BOTS=$(BOTS)) $(foreach name,$(bot_env_names),$(if $(strip $($(name))),$(name)=$($(name)))))
# add-scheduler and the scheduler-* targets with BOT=NAME: that bot's job, SCHEDULER_JOB_NAME-NAME, posting
# to ?bot=NAME on its BOT_<NAME>_SCHEDULE and BOT_<NAME>_TIME_ZONE (unset: the defaults, as the service's
# settings; with one bot, BOT names it and SCHEDULE and TIME_ZONE are its own).
job_name = $(SCHEDULER_JOB_NAME)$(if $(BOT),-$(BOT))
job_schedule = $(if $(named_bot_prefix),$(or $($(named_bot_prefix)SCHEDULE),$(DEFAULT_SCHEDULE)),$(SCHEDULE))
job_time_zone = $(if $(named_bot_prefix),$(or $($(named_bot_prefix)TIME_ZONE),$(DEFAULT_TIME_ZONE)),$(TIME_ZONE))
job_uri = $(service_url)/tweet_curated/$(if $(BOT),?bot=$(BOT))

SETUP_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY RUN_SERVICE_ACCOUNT SCHEDULER_SERVICE_ACCOUNT
SECRETS_VARS := PROJECT_ID DOCKER_INSTANCE_NAME
POSTGRES_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME DB_INSTANCE DB_USERNAME DB_NAME DB_VERSION DB_TIER DB_EDITION
BUILD_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY DOCKER_INSTANCE_NAME
MIGRATE_VARS := $(BUILD_VARS) CONNECTION_NAME DB_USERNAME DB_NAME RUN_SERVICE_ACCOUNT
# ACCOUNT names the one bot; with several, BOTS does (ACCOUNT is then optional).
RUN_VARS := $(MIGRATE_VARS) $(if $(BOTS),,ACCOUNT)
SCHEDULER_VARS := PROJECT_ID REGION DOCKER_INSTANCE_NAME SCHEDULER_JOB_NAME CLOUD_RUN_URL SCHEDULE TIME_ZONE SCHEDULER_SERVICE_ACCOUNT
JOB_VARS := PROJECT_ID REGION SCHEDULER_JOB_NAME
GENERATOR_VARS := PROJECT_ID REGION ARTIFACT_REPOSITORY GENERATOR_SERVICE_NAME

# Flags most commands share, each value quoted.
project = --project=$(call q,$(PROJECT_ID))
in_region = $(project) --region=$(call q,$(REGION))
job = $(call q,$(job_name)) $(project) --location=$(call q,$(REGION))

.PHONY: docker-compose cloud-setup cloud-secrets create-postgres-instance docker-cloud-build cloud-migrate \
	docker-cloud-run docker-cloud-build-run add-scheduler add-schedulers scheduler-pause scheduler-resume scheduler-run-now \
	scheduler-delete generator-context docker-generator docker-cloud-build-generator docker-cloud-run-generator

# ---- one machine ----
docker-compose: ## self-host: Postgres, migrations, the API (127.0.0.1:8080) and the scheduler, from .env
	@test -f .env || { echo "No .env: copy .env_reference to .env and fill in SECRET_TOKEN, ACCOUNT, DB_PASSWORD and the X credentials." >&2; exit 1; }
	docker compose up --build --detach
	docker compose ps

# ---- Google Cloud, in the order of a first deployment ----
cloud-setup: ## enable the APIs; create the image repository and the service accounts with their roles
	@$(call require,$(SETUP_VARS))
	gcloud services enable run.googleapis.com sqladmin.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com secretmanager.googleapis.com cloudscheduler.googleapis.com iam.googleapis.com $(project)
	gcloud artifacts repositories describe $(call q,$(ARTIFACT_REPOSITORY)) --location=$(call q,$(REGION)) $(project) >/dev/null 2>&1 \
	  || gcloud artifacts repositories create $(call q,$(ARTIFACT_REPOSITORY)) --repository-format=docker --location=$(call q,$(REGION)) $(project)
	gcloud iam service-accounts describe $(call q,$(RUN_SERVICE_ACCOUNT)) $(project) >/dev/null 2>&1 \
	  || gcloud iam service-accounts create $(call q,$(firstword $(subst @, ,$(RUN_SERVICE_ACCOUNT)))) --display-name="tweet bot service" $(project)
	gcloud iam service-accounts describe $(call q,$(SCHEDULER_SERVICE_ACCOUNT)) $(project) >/dev/null 2>&1 \
	  || gcloud iam service-accounts create $(call q,$(firstword $(subst @, ,$(SCHEDULER_SERVICE_ACCOUNT)))) --display-name="tweet bot scheduler" $(project)
	gcloud projects add-iam-policy-binding $(call q,$(PROJECT_ID)) --member=$(call q,serviceAccount:$(RUN_SERVICE_ACCOUNT)) --role=roles/cloudsql.client --condition=None
	gcloud projects add-iam-policy-binding $(call q,$(PROJECT_ID)) --member=$(call q,serviceAccount:$(RUN_SERVICE_ACCOUNT)) --role=roles/secretmanager.secretAccessor --condition=None

cloud-secrets: ## copy SECRET_TOKEN, DB_PASSWORD and each bot's credentials (its DESTINATIONS') from .env to Secret Manager
	@$(call require,$(SECRETS_VARS))
	@test -x $(call q,$(BIN)/python) || { echo "No "$(call q,$(BIN)/python)": run make venv first." >&2; exit 1; }
	$(call q,$(BIN)/python) scripts/cloud_secrets.py $(project) --prefix=$(call q,$(SECRET_PREFIX)) --env-file=$(call q,$(ENV_FILE)) $(CLOUD_RUN_SECRETS)

create-postgres-instance: ## create the Cloud SQL instance, its database and user (password from Secret Manager)
	@$(call require,$(POSTGRES_VARS))
	gcloud sql instances create $(call q,$(DB_INSTANCE)) $(in_region) \
	  --database-version=$(call q,$(DB_VERSION)) --edition=$(call q,$(DB_EDITION)) --tier=$(call q,$(DB_TIER))
	gcloud sql databases create $(call q,$(DB_NAME)) --instance=$(call q,$(DB_INSTANCE)) $(project)
	$(call secret_flags,{"--password": "%s"},DB_PASSWORD) \
	  && gcloud sql users $(if $(filter postgres,$(DB_USERNAME)),set-password,create) $(call q,$(DB_USERNAME)) \
	  --instance=$(call q,$(DB_INSTANCE)) $(project) --flags-file="$$flags"

docker-cloud-build: ## build the API image with Cloud Build into Artifact Registry
	@$(call require,$(BUILD_VARS))
	gcloud builds submit $(in_region) --tag=$(call q,$(IMAGE)) .

cloud-migrate: ## upgrade the Cloud SQL schema: a Cloud Run job from the API image runs alembic upgrade head
	@$(call require,$(MIGRATE_VARS))
	gcloud run jobs deploy $(call q,$(MIGRATE_JOB_NAME)) $(in_region) --image=$(call q,$(IMAGE)) \
	  --service-account=$(call q,$(RUN_SERVICE_ACCOUNT)) --set-cloudsql-instances=$(call q,$(CONNECTION_NAME)) \
	  --set-env-vars=$(call q,CONNECTION_NAME=$(CONNECTION_NAME)$(comma)DB_USERNAME=$(DB_USERNAME)$(comma)DB_NAME=$(DB_NAME)) \
	  --set-secrets=$(call q,$(call secret_refs,DB_PASSWORD)) \
	  --command=alembic --args=upgrade,head --max-retries=0 --task-timeout=10m --execute-now --wait

docker-cloud-run: ## deploy the API to Cloud Run (Cloud SQL, Secret Manager; authenticated unless ALLOW_UNAUTHENTICATED=true)
	@$(call require,$(RUN_VARS))
	gcloud run deploy $(call q,$(DOCKER_INSTANCE_NAME)) $(in_region) --image=$(call q,$(IMAGE)) \
	  --service-account=$(call q,$(RUN_SERVICE_ACCOUNT)) --add-cloudsql-instances=$(call q,$(CONNECTION_NAME)) \
	  $(env_flags) --set-secrets=$(call q,$(call secret_refs,$(CLOUD_RUN_SECRETS))) \
	  --max-instances=$(call q,$(CLOUD_RUN_MAX_INSTANCES)) $(auth_flag)
	@echo "CLOUD_RUN_URL=$$(gcloud run services describe $(call q,$(DOCKER_INSTANCE_NAME)) $(in_region) --format='value(status.url)')  (put it in .env for make add-scheduler)"

docker-cloud-build-run: ## build, migrate, then deploy (checks every variable first)
	@$(call require,$(sort $(BUILD_VARS) $(MIGRATE_VARS) $(RUN_VARS)))
	$(MAKE) --no-print-directory docker-cloud-build cloud-migrate docker-cloud-run

# The token goes from Secret Manager to gcloud in a private flags file (see secret_flags), and --format
# prints only the job's name: the whole job, which gcloud prints otherwise, holds the header.
add-scheduler: ## create the Cloud Scheduler job: POST $(CLOUD_RUN_URL)/tweet_curated/ on SCHEDULE, with OIDC and x-token; BOT=NAME: that bot's job
	@$(call require,$(SCHEDULER_VARS))$(require_known_bot)
	gcloud run services add-iam-policy-binding $(call q,$(DOCKER_INSTANCE_NAME)) $(in_region) \
	  --member=$(call q,serviceAccount:$(SCHEDULER_SERVICE_ACCOUNT)) --role=roles/run.invoker
	$(call secret_flags,{"--headers": {"x-token": "%s"}},SECRET_TOKEN) \
	  && gcloud scheduler jobs create http $(job) \
	  --schedule=$(call q,$(job_schedule)) --time-zone=$(call q,$(job_time_zone)) --uri=$(call q,$(job_uri)) --http-method=POST \
	  --flags-file="$$flags" \
	  --oidc-service-account-email=$(call q,$(SCHEDULER_SERVICE_ACCOUNT)) --oidc-token-audience=$(call q,$(service_url)) \
	  --attempt-deadline=$(call q,$(SCHEDULER_ATTEMPT_DEADLINE)) --max-retry-attempts=$(call q,$(SCHEDULER_MAX_RETRY_ATTEMPTS)) \
	  --min-backoff=$(call q,$(SCHEDULER_MIN_BACKOFF)) --max-backoff=$(call q,$(SCHEDULER_MAX_BACKOFF)) --max-doublings=$(call q,$(SCHEDULER_MAX_DOUBLINGS)) \
	  --format='value(name)'

add-schedulers: ## with several bots: add-scheduler BOT=NAME for each bot of BOTS, in order (stops at the first that fails)
	@test -n "$(bot_names)" || { echo "add-schedulers makes a job per bot of BOTS (BOTS=alice,bob in .env); with one bot: make add-scheduler" >&2; exit 2; }
	@for bot in $(bot_names); do $(MAKE) --no-print-directory add-scheduler BOT="$$bot" || exit 1; done

scheduler-pause: ## pause the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs pause $(job)

scheduler-resume: ## resume the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs resume $(job)

scheduler-run-now: ## run the Cloud Scheduler job once now (posts the next tweet)
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs run $(job)

scheduler-delete: ## delete the Cloud Scheduler job
	@$(call require,$(JOB_VARS))
	gcloud scheduler jobs delete $(job) --quiet

# ---- the generation service (TensorFlow; its own image) ----
# RUN_NAME's shape (one folder name) keeps it a plain word in the sed replacement below.
generator-context: ## stage ml/Dockerfile's build context in build/generator: core/ and ml/ (what git does not ignore), the run CHECKPOINT_DIR/RUN_NAME
	@$(call require,RUN_NAME CHECKPOINT_DIR GENERATOR_CONTEXT)
	@run_folder=$(call q,$(CHECKPOINT_DIR)/$(RUN_NAME)); test -f $(call path_arg,$(CHECKPOINT_DIR)/$(RUN_NAME)/hparams.json) \
	  || { echo "No run folder $$run_folder (hparams.json missing): train one (make train) or set CHECKPOINT_DIR and RUN_NAME." >&2; exit 1; }
	rm -rf $(call path_arg,$(GENERATOR_CONTEXT))
	mkdir -p $(call path_arg,$(GENERATOR_CONTEXT)/checkpoint)
	sed 's/^ARG RUN_NAME=.*/ARG RUN_NAME=$(RUN_NAME)/' ml/Dockerfile > $(call q,$(GENERATOR_CONTEXT))/Dockerfile
	cp requirements-core.txt requirements-ml.txt $(call path_arg,$(GENERATOR_CONTEXT))/
	git ls-files -z --cached --others --exclude-standard core ml | tar --null -T - -cf - | tar -xf - -C $(call path_arg,$(GENERATOR_CONTEXT))
	cp -R $(call path_arg,$(CHECKPOINT_DIR)/$(RUN_NAME)) $(call path_arg,$(GENERATOR_CONTEXT)/checkpoint/$(RUN_NAME))

docker-generator: ## build the generation image locally (tag $(GENERATOR_SERVICE_NAME):local, else gpt2-tweet-bot-generator:local), bundling CHECKPOINT_DIR/RUN_NAME
	@$(call require,RUN_NAME $(if $(GENERATOR_SERVICE_NAME),GENERATOR_SERVICE_NAME))
	$(MAKE) --no-print-directory generator-context
	docker build -t $(call q,$(or $(GENERATOR_SERVICE_NAME),gpt2-tweet-bot-generator):local) $(call path_arg,$(GENERATOR_CONTEXT))

docker-cloud-build-generator: ## build the generation image with Cloud Build (bundles CHECKPOINT_DIR/RUN_NAME)
	@$(call require,$(GENERATOR_VARS) RUN_NAME)
	$(MAKE) --no-print-directory generator-context
	gcloud builds submit $(call path_arg,$(GENERATOR_CONTEXT)) $(in_region) --timeout=3600s --tag=$(call q,$(GENERATOR_IMAGE))

docker-cloud-run-generator: ## deploy the generation service to Cloud Run (authenticated unless ALLOW_UNAUTHENTICATED=true)
	@$(call require,$(GENERATOR_VARS) RUN_SERVICE_ACCOUNT GENERATOR_MEMORY GENERATOR_CPU)
	gcloud run deploy $(call q,$(GENERATOR_SERVICE_NAME)) $(in_region) --image=$(call q,$(GENERATOR_IMAGE)) \
	  --service-account=$(call q,$(RUN_SERVICE_ACCOUNT)) --memory=$(call q,$(GENERATOR_MEMORY)) --cpu=$(call q,$(GENERATOR_CPU)) \
	  --max-instances=$(call q,$(CLOUD_RUN_MAX_INSTANCES)) $(auth_flag)
