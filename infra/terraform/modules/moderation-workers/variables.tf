# Inputs of the moderation-workers module. Rules that involve one variable are `validation` blocks
# here; rules that relate two or more variables are `precondition`s on the resources that consume
# them (see main.tf), because cross-variable validation needs Terraform 1.9 and this module admits 1.6.

# --- Naming and tagging ----------------------------------------------------------------------------

variable "name" {
  description = "Name of this worker fleet; prefixes every resource (ASG, IAM role, log group, alarms, MSK cluster)."
  type        = string
  default     = "moderation-worker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource (and propagated to instances and volumes)."
  type        = map(string)
  default     = {}
}

# --- Network ---------------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC the workers (and the MSK cluster, when created) run in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the workers (spread over AZs). Workers get no public IP: the subnets need a NAT gateway or VPC endpoints for S3, ECR, CloudWatch Logs and Hugging Face."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "subnet_ids must be a non-empty list of subnet ids (subnet-...)."
  }
}

variable "metrics_ingress_cidr_blocks" {
  description = "CIDRs (normally the VPC CIDR(s)) allowed to reach the worker's health/metrics port (/livez, /readyz, /metrics). Nothing else is open inbound."
  type        = list(string)

  validation {
    condition     = length(var.metrics_ingress_cidr_blocks) > 0 && alltrue([for c in var.metrics_ingress_cidr_blocks : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "metrics_ingress_cidr_blocks must be a non-empty list of valid IPv4 CIDRs, none of them /0 (the metrics port is never public)."
  }
}

# --- Compute ---------------------------------------------------------------------------------------

variable "instance_type" {
  description = "GPU instance type (the first choice of the mixed-instances policy). Default g6.xlarge: one NVIDIA L4 (24 GB, bf16), 4 vCPU, 16 GiB, 250 GB NVMe instance store; the 9B GLM-4.6V-Flash in bf16 (~19 GB of weights) fits one GPU at the lowest hourly price of the 24 GB class. Use g6e.xlarge (L40S, 48 GB) for larger batches or models."
  type        = string
  default     = "g6.xlarge"

  validation {
    # One container uses one GPU (--gpus all, one worker per instance): only single-GPU sizes of the
    # x86_64 NVIDIA families the Deep Learning Base OSS Nvidia Driver GPU AMI (AL2023) supports.
    # Multi-GPU sizes (g5/g6/g6e.12xlarge and up, g4dn.12xlarge, metal, every p type) would pay for
    # GPUs that sit idle; fractional-GPU g6f/gr6f are too small for the default model.
    condition     = can(regex("^((g4dn|g5|g6|g6e)\\.(2|4|8|16)?xlarge|gr6\\.(4|8)xlarge)$", var.instance_type))
    error_message = "instance_type must be a single-GPU NVIDIA type: g4dn, g5, g6 or g6e in xlarge, 2xlarge, 4xlarge, 8xlarge or 16xlarge, or gr6.4xlarge / gr6.8xlarge (e.g. g6.xlarge). Multi-GPU sizes such as g6.12xlarge are refused: one worker uses one GPU."
  }
}

variable "ami_ssm_parameter_name" {
  description = "SSM public parameter holding the AMI id (a GPU-ready image with the NVIDIA driver, Docker and the NVIDIA Container Toolkit). Ignored when ami_id is set."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.\\-/]+$", var.ami_ssm_parameter_name))
    error_message = "ami_ssm_parameter_name must be an SSM parameter path starting with '/'."
  }
}

variable "ami_id" {
  description = "Pin an AMI id instead of following the SSM parameter. The SSM 'latest' parameter moves when AWS publishes a new DLAMI, which creates a new launch template version and an instance refresh on the next apply; pin to control when that happens."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null or look like ami-0123456789abcdef0."
  }
}

variable "root_volume_size_gb" {
  description = "Root volume size (GiB, gp3, encrypted). Holds the AMI (75 GiB snapshot), the worker image (CUDA + torch, ~10-15 GB) and the Hugging Face cache (~20 GB for GLM-4.6V-Flash)."
  type        = number
  default     = 150

  validation {
    condition     = var.root_volume_size_gb >= 75 && var.root_volume_size_gb <= 16384 && floor(var.root_volume_size_gb) == var.root_volume_size_gb
    error_message = "root_volume_size_gb must be a whole number between 75 (the DLAMI root snapshot) and 16384."
  }
}

variable "root_device_name" {
  description = "Root device name of the AMI (/dev/xvda on Amazon Linux 2023)."
  type        = string
  default     = "/dev/xvda"

  validation {
    condition     = can(regex("^/dev/[a-z0-9]+$", var.root_device_name))
    error_message = "root_device_name must look like /dev/xvda."
  }
}

variable "root_volume_kms_key_arn" {
  description = "KMS key for the root volume; null uses the account's default EBS key (aws/ebs). The volume is encrypted either way."
  type        = string
  default     = null

  validation {
    condition     = var.root_volume_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+$", var.root_volume_kms_key_arn))
    error_message = "root_volume_kms_key_arn must be null or a KMS key/alias ARN."
  }
}

variable "enable_ssm_session_manager" {
  description = "Attach AmazonSSMManagedInstanceCore so operators can open Session Manager shells. Off by default: that managed policy also grants ssm:GetParameter(s) on every parameter in the account, which this least-privilege worker role otherwise never needs; switch it on for fleets where operators debug GPU hosts in place."
  type        = bool
  default     = false
}

variable "permissions_boundary_arn" {
  description = "Optional IAM permissions boundary for the instance role (for accounts that require one)."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary_arn == null || can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", var.permissions_boundary_arn))
    error_message = "permissions_boundary_arn must be null or an IAM policy ARN."
  }
}

# --- Capacity and rollout --------------------------------------------------------------------------

variable "min_size" {
  description = "Fewest workers. 0 lets the fleet scale to zero when there is no lag (the lag metric still drives scale-out from zero)."
  type        = number
  default     = 1

  validation {
    condition     = var.min_size >= 0 && var.min_size <= 1000 && floor(var.min_size) == var.min_size
    error_message = "min_size must be a whole number between 0 and 1000."
  }
}

variable "max_size" {
  description = "Most workers. More workers than input-topic partitions sit idle (Kafka gives each partition to one group member), so keep it at or below the partition count."
  type        = number
  default     = 4

  validation {
    condition     = var.max_size >= 1 && var.max_size <= 1000 && floor(var.max_size) == var.max_size
    error_message = "max_size must be a whole number between 1 and 1000."
  }
}

variable "desired_capacity" {
  description = "Workers at creation; afterwards the scaling policy owns it (Terraform ignores later drift). null starts at min_size."
  type        = number
  default     = null

  validation {
    condition     = var.desired_capacity == null || try(var.desired_capacity >= 0 && floor(var.desired_capacity) == var.desired_capacity, false)
    error_message = "desired_capacity must be null or a whole number >= 0."
  }
}

variable "instance_warmup_seconds" {
  description = "Seconds after an instance is InService until it counts towards scaling metrics and instance-refresh progress. The launch lifecycle hook already holds new instances until /readyz passes (launch_timeout_seconds), so this only covers the first batches."
  type        = number
  default     = 120

  validation {
    condition     = var.instance_warmup_seconds >= 0 && var.instance_warmup_seconds <= 3600
    error_message = "instance_warmup_seconds must be between 0 and 3600."
  }
}

variable "instance_refresh_min_healthy_percentage" {
  description = "Share of the fleet kept in service while an instance refresh (and health or rebalancing replacement) replaces workers. 100 with instance_refresh_max_healthy_percentage = 200: a replacement is launched, passes /readyz and only then is the old one drained, so a one-instance fleet never drops to zero."
  type        = number
  default     = 100

  validation {
    condition     = var.instance_refresh_min_healthy_percentage >= 0 && var.instance_refresh_min_healthy_percentage <= 100
    error_message = "instance_refresh_min_healthy_percentage must be between 0 and 100."
  }
}

variable "stop_timeout_seconds" {
  description = "Grace period after SIGTERM for the worker to finish its in-flight batch, flush verdicts and commit offsets (docker --stop-timeout, and the drain on scale-in / refresh / shutdown). Keep it above the worker's delivery_timeout_s plus one batch."
  type        = number
  default     = 180

  validation {
    condition     = var.stop_timeout_seconds >= 30 && var.stop_timeout_seconds <= 3600 && floor(var.stop_timeout_seconds) == var.stop_timeout_seconds
    error_message = "stop_timeout_seconds must be a whole number between 30 and 3600."
  }
}

# --- Container and worker configuration (MODERATION_* env vars) -----------------------------------

variable "container_image" {
  description = "Worker image, pinned by tag or digest (e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2). When it is an ECR image, the role may pull exactly that repository."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$", var.container_image))
    error_message = "container_image must be a registry reference with an explicit tag or @sha256 digest (lowercase repository, no spaces or quotes)."
  }

  validation {
    condition     = !endswith(var.container_image, ":latest")
    error_message = "container_image must not use :latest; pin a version or digest so that a new image rolls out as a new launch template version (instance refresh)."
  }
}

variable "health_port" {
  description = "MODERATION_HEALTH_PORT: the worker's /livez, /readyz and /metrics port, published on the host and open to metrics_ingress_cidr_blocks."
  type        = number
  default     = 8080

  validation {
    condition     = var.health_port >= 1 && var.health_port <= 65535 && floor(var.health_port) == var.health_port
    error_message = "health_port must be a whole number between 1 and 65535."
  }
}

variable "group_id" {
  description = "MODERATION_GROUP_ID: the consumer group every worker joins (also the lag metric's dimension). ASCII without ':' so MSK publishes its lag metrics."
  type        = string
  default     = "moderation-worker"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.group_id))
    error_message = "group_id must be 1-249 characters of letters, digits, '.', '_' or '-'."
  }
}

variable "input_topic" {
  description = "MODERATION_INPUT_TOPIC."
  type        = string
  default     = "moderation.requests"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.input_topic))
    error_message = "input_topic must be a valid Kafka topic name (letters, digits, '.', '_', '-')."
  }
}

variable "results_topic" {
  description = "MODERATION_RESULTS_TOPIC."
  type        = string
  default     = "moderation.results"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.results_topic))
    error_message = "results_topic must be a valid Kafka topic name (letters, digits, '.', '_', '-')."
  }
}

variable "review_topic" {
  description = "MODERATION_REVIEW_TOPIC."
  type        = string
  default     = "moderation.review"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.review_topic))
    error_message = "review_topic must be a valid Kafka topic name (letters, digits, '.', '_', '-')."
  }
}

variable "dlq_topic" {
  description = "MODERATION_DLQ_TOPIC: the dead-letter topic whose message rate the DLQ alarm watches."
  type        = string
  default     = "moderation.dlq"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,249}$", var.dlq_topic))
    error_message = "dlq_topic must be a valid Kafka topic name (letters, digits, '.', '_', '-')."
  }
}

variable "model_id" {
  description = "MODERATION_MODEL_ID: Hugging Face id (model_weights_source \"hub\"; downloaded once into the host cache) or a path inside the image (\"image\"). With \"s3\" the worker gets weights_container_path instead, and this id only names the model in docs."
  type        = string
  default     = "zai-org/GLM-4.6V-Flash"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./-]{1,200}$", var.model_id))
    error_message = "model_id must be a Hugging Face id or a path (letters, digits, '_', '.', '/', '-')."
  }
}

variable "model_revision" {
  description = "MODERATION_MODEL_REVISION: the model's Hub commit (40 hex digits), required. A branch or tag moves, and then the fleet runs mixed revisions; with S3 weights it labels verdicts and cache keys with the commit the folder was downloaded at."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{40}$", var.model_revision))
    error_message = "model_revision must be a full 40-hex commit sha (e.g. from `huggingface-cli` or the Hub's commit history), not a branch or tag such as main."
  }
}

variable "worker_environment" {
  description = "Further worker settings as MODERATION_* variables (e.g. MODERATION_BATCH_SIZE = \"32\"). Secrets are refused here (user data is readable through the EC2 API); settings the module already sets are refused to keep one source of truth."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.worker_environment) : can(regex("^MODERATION_[A-Z0-9_]+$", k))])
    error_message = "worker_environment keys must be MODERATION_<SETTING> in upper case."
  }

  validation {
    condition = length(setintersection(keys(var.worker_environment), [
      "MODERATION_KAFKA_SASL_PASSWORD", "MODERATION_S3_ACCESS_KEY_ID", "MODERATION_S3_SECRET_ACCESS_KEY",
    ])) == 0
    error_message = "worker_environment must not carry secrets: the workers use the instance role for S3, and kafka_sasl_password_ssm_parameter for the Kafka password."
  }

  validation {
    condition = length(setintersection(keys(var.worker_environment), [
      "MODERATION_KAFKA_BOOTSTRAP_SERVERS", "MODERATION_KAFKA_SECURITY_PROTOCOL", "MODERATION_KAFKA_SASL_MECHANISM",
      "MODERATION_KAFKA_SASL_USERNAME", "MODERATION_GROUP_ID", "MODERATION_INPUT_TOPIC", "MODERATION_RESULTS_TOPIC",
      "MODERATION_REVIEW_TOPIC", "MODERATION_DLQ_TOPIC", "MODERATION_S3_REGION", "MODERATION_MODEL_ID",
      "MODERATION_MODEL_REVISION", "MODERATION_MODEL_LOCAL_FILES_ONLY", "MODERATION_HEALTH_PORT", "MODERATION_WORKER_ID",
    ])) == 0
    error_message = "worker_environment must not repeat a setting the module sets from its own variables (bootstrap servers, security protocol, SASL mechanism/username, group, topics, S3 region, model id/revision/local files, health port, worker id)."
  }

  validation {
    condition     = alltrue([for v in values(var.worker_environment) : !can(regex("[\\n\\r\\x00]", v))])
    error_message = "worker_environment values must be single-line."
  }
}

variable "container_command" {
  description = "Arguments after the image. The worker image's ENTRYPOINT is `tini -- moderation-worker` (docker/Dockerfile.gpu), so [\"run\"] runs `moderation-worker run`."
  type        = list(string)
  default     = ["run"]

  validation {
    condition     = length(var.container_command) > 0 && alltrue([for a in var.container_command : can(regex("^[A-Za-z0-9_./:=@,+-]+$", a))])
    error_message = "container_command must be a non-empty list of plain arguments (letters, digits, _ . / : = @ , + -)."
  }
}

variable "model_weights_source" {
  description = <<-EOT
    Where the worker finds the model weights; null: "s3" when weights_s3_uri is set, else "hub".
    "s3" (recommended): at every boot `aws s3 sync` copies weights_s3_uri to instance storage (the NVMe instance store when the type has one, else the root volume), mounted read-only at weights_container_path; MODERATION_MODEL_ID is that folder, HF_HUB_OFFLINE=1. No Hub, no NAT traffic per instance, one pinned copy for the whole fleet.
    "hub": a host directory (hf_cache_host_path) is mounted at the image's HF_HOME and HF_HUB_OFFLINE=0, so the first start on an instance downloads model_id at model_revision from the Hugging Face hub (egress to huggingface.co; hf_token_ssm_parameter for gated models).
    "image": the weights are baked into the image (BAKE_MODEL_ID build arg); nothing is mounted over them and HF_HUB_OFFLINE=1.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.model_weights_source == null || contains(["s3", "hub", "image"], coalesce(var.model_weights_source, "x"))
    error_message = "model_weights_source must be null, \"s3\", \"hub\" or \"image\"."
  }
}

variable "hf_cache_host_path" {
  description = "Host directory holding the Hugging Face cache (model_weights_source = \"hub\"), mounted at hf_cache_container_path."
  type        = string
  default     = "/var/lib/moderation-worker/huggingface"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.hf_cache_host_path))
    error_message = "hf_cache_host_path must be an absolute path of letters, digits, '_', '.', '/', '-'."
  }
}

variable "hf_cache_container_path" {
  description = "HF_HOME inside the worker image (/models/hf in docker/Dockerfile.gpu)."
  type        = string
  default     = "/models/hf"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.hf_cache_container_path))
    error_message = "hf_cache_container_path must be an absolute path of letters, digits, '_', '.', '/', '-'."
  }
}

variable "container_uid" {
  description = "UID the worker image runs as (10001 in docker/Dockerfile.gpu); the host cache directory is given to it."
  type        = number
  default     = 10001

  validation {
    condition     = var.container_uid >= 0 && var.container_uid <= 2147483647 && floor(var.container_uid) == var.container_uid
    error_message = "container_uid must be a whole number >= 0."
  }
}

variable "log_retention_days" {
  description = "Retention of the worker log group."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "log_kms_key_arn" {
  description = "Optional KMS key for the log groups (the key policy must allow CloudWatch Logs); null uses CloudWatch's own encryption."
  type        = string
  default     = null

  validation {
    condition     = var.log_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.log_kms_key_arn))
    error_message = "log_kms_key_arn must be null or a KMS key ARN."
  }
}

# --- Images bucket: create one, or name an existing one (exactly one) ------------------------------

variable "create_bucket_name" {
  description = "Create the images bucket with this name (hardened: public access blocked, default encryption, versioning, BucketOwnerEnforced, TLS-only policy). Set this or existing_bucket_name, not both."
  type        = string
  default     = null

  validation {
    condition = var.create_bucket_name == null || try(alltrue([
      length(var.create_bucket_name) >= 3,
      length(var.create_bucket_name) <= 63,
      can(regex("^[a-z0-9][a-z0-9.-]*[a-z0-9]$", var.create_bucket_name)),
      !strcontains(var.create_bucket_name, ".."),
      !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.create_bucket_name)),
      !startswith(var.create_bucket_name, "xn--"),
      !startswith(var.create_bucket_name, "sthree-"),
      !endswith(var.create_bucket_name, "-s3alias"),
      !endswith(var.create_bucket_name, "--ol-s3"),
    ]), false)
    error_message = "create_bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, '.', '-', starting and ending with a letter or digit, no '..', not an IP address, no reserved prefix/suffix."
  }
}

variable "existing_bucket_name" {
  description = "Use this existing images bucket instead of creating one. Set this or create_bucket_name, not both."
  type        = string
  default     = null

  validation {
    condition = var.existing_bucket_name == null || try(alltrue([
      length(var.existing_bucket_name) >= 3,
      length(var.existing_bucket_name) <= 63,
      can(regex("^[a-z0-9][a-z0-9.-]*[a-z0-9]$", var.existing_bucket_name)),
      !strcontains(var.existing_bucket_name, ".."),
      !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$", var.existing_bucket_name)),
    ]), false)
    error_message = "existing_bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, '.', '-', starting and ending with a letter or digit, no '..', not an IP address."
  }
}

variable "images_prefix" {
  description = "Key prefix the workers may read (e.g. \"uploads/\"); \"\" allows the whole bucket. The role gets s3:GetObject on bucket/prefix* and s3:ListBucket limited to that prefix (ListBucket turns a missing key into 404 instead of 403)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Za-z0-9!_.'()=-]+/)*$", var.images_prefix))
    error_message = "images_prefix must be \"\" or end with '/', with no leading '/' and no wildcards, e.g. \"uploads/\"."
  }
}

variable "images_bucket_region" {
  description = "MODERATION_S3_REGION: region of the images bucket; null means the provider's region (always the case for a created bucket)."
  type        = string
  default     = null

  validation {
    condition     = var.images_bucket_region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.images_bucket_region))
    error_message = "images_bucket_region must be null or a region name like eu-west-1."
  }
}

variable "bucket_sse_algorithm" {
  description = "Default encryption of a created bucket: aws:kms (bucket key on) or AES256 (SSE-S3)."
  type        = string
  default     = "aws:kms"

  validation {
    condition     = contains(["aws:kms", "AES256"], var.bucket_sse_algorithm)
    error_message = "bucket_sse_algorithm must be aws:kms or AES256."
  }
}

variable "bucket_kms_key_arn" {
  description = "Customer managed KMS key of the images bucket (created: its default key; existing: the key its objects use). The role gets kms:Decrypt on it, through S3 only. null: the AWS managed aws/s3 key, which needs no grant."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.bucket_kms_key_arn))
    error_message = "bucket_kms_key_arn must be null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "bucket_force_destroy" {
  description = "Allow `terraform destroy` to delete a created bucket that still holds images."
  type        = bool
  default     = false
}

variable "bucket_noncurrent_version_expiration_days" {
  description = "Days a created bucket keeps overwritten/deleted image versions before expiring them."
  type        = number
  default     = 30

  validation {
    condition     = var.bucket_noncurrent_version_expiration_days >= 1 && floor(var.bucket_noncurrent_version_expiration_days) == var.bucket_noncurrent_version_expiration_days
    error_message = "bucket_noncurrent_version_expiration_days must be a whole number >= 1."
  }
}

variable "bucket_access_log_bucket" {
  description = "Optional bucket receiving S3 server access logs of a created images bucket."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_access_log_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_access_log_bucket))
    error_message = "bucket_access_log_bucket must be null or a bucket name."
  }
}

# --- Kafka: an existing cluster's bootstrap servers, or an MSK cluster created here ----------------

variable "kafka_bootstrap_servers" {
  description = "MODERATION_KAFKA_BOOTSTRAP_SERVERS of an existing cluster: comma-separated host:port. Leave \"\" when create_msk_cluster is true (the MSK IAM brokers are used)."
  type        = string
  default     = ""

  validation {
    condition     = var.kafka_bootstrap_servers == "" || can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}(,[A-Za-z0-9.-]+:[0-9]{1,5})*$", var.kafka_bootstrap_servers))
    error_message = "kafka_bootstrap_servers must be \"\" or a comma-separated list of host:port without spaces."
  }
}

variable "kafka_security_protocol" {
  description = "MODERATION_KAFKA_SECURITY_PROTOCOL of an existing cluster. null: the worker's default (PLAINTEXT). A created MSK cluster always gets SASL_SSL (IAM); leave this null or SASL_SSL then."
  type        = string
  default     = null

  validation {
    condition     = var.kafka_security_protocol == null || contains(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], coalesce(var.kafka_security_protocol, "x"))
    error_message = "kafka_security_protocol must be null, PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
  }
}

variable "kafka_sasl_mechanism" {
  description = "MODERATION_KAFKA_SASL_MECHANISM for an existing cluster with SASL. A created MSK cluster gets AWS_MSK_IAM from the module; leave this null then."
  type        = string
  default     = null

  validation {
    condition     = var.kafka_sasl_mechanism == null || contains(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], coalesce(var.kafka_sasl_mechanism, "x"))
    error_message = "kafka_sasl_mechanism must be null, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
  }
}

variable "kafka_sasl_username" {
  description = "MODERATION_KAFKA_SASL_USERNAME."
  type        = string
  default     = null

  validation {
    condition     = var.kafka_sasl_username == null || can(regex("^[A-Za-z0-9@._=+-]{1,256}$", var.kafka_sasl_username))
    error_message = "kafka_sasl_username must be null or 1-256 characters without spaces or quotes."
  }
}

variable "kafka_sasl_password_ssm_parameter" {
  description = "Name of a SecureString SSM parameter (encrypted with the AWS managed aws/ssm key) holding the SASL password. The instance reads it at boot into the root-only env file; the role may read only this parameter. The password never enters user data or Terraform state."
  type        = string
  default     = null

  validation {
    condition     = var.kafka_sasl_password_ssm_parameter == null || can(regex("^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.kafka_sasl_password_ssm_parameter))
    error_message = "kafka_sasl_password_ssm_parameter must be null or an SSM parameter name such as /moderation/kafka-password."
  }
}

variable "create_msk_cluster" {
  description = "Create an MSK cluster (three brokers in three AZs, IAM client authentication over TLS, encrypted at rest) and its four topics, and feed its IAM bootstrap brokers to the workers."
  type        = bool
  default     = false
}

variable "msk_subnet_ids" {
  description = "Subnets for the MSK brokers: exactly 3, in distinct AZs (replication factor 3 with min.insync.replicas 2 keeps acks=all writes going while MSK patches one broker at a time); null uses subnet_ids."
  type        = list(string)
  default     = null

  validation {
    condition     = var.msk_subnet_ids == null || try(alltrue([for s in var.msk_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))]), false)
    error_message = "msk_subnet_ids must be null or a list of subnet ids."
  }
}

variable "msk_kafka_version" {
  description = "Apache Kafka version of a created MSK cluster."
  type        = string
  default     = "3.6.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.([0-9]+|x)(\\.[a-z]+)?$", var.msk_kafka_version))
    error_message = "msk_kafka_version must look like 3.6.0 or 3.7.x."
  }
}

variable "msk_broker_instance_type" {
  description = "Broker instance type of a created MSK cluster."
  type        = string
  default     = "kafka.m7g.large"

  validation {
    condition     = can(regex("^(kafka|express)\\.[a-z0-9]+\\.[a-z0-9]+$", var.msk_broker_instance_type))
    error_message = "msk_broker_instance_type must look like kafka.m7g.large."
  }
}

variable "msk_broker_count" {
  description = "Brokers of a created MSK cluster, a multiple of 3 (the number of MSK subnets); null: 3."
  type        = number
  default     = null

  validation {
    condition     = var.msk_broker_count == null || try(var.msk_broker_count >= 3 && var.msk_broker_count % 3 == 0, false)
    error_message = "msk_broker_count must be null or a multiple of 3 (3, 6, 9, ...): one or more brokers in each of the three AZs."
  }
}

variable "msk_broker_volume_size_gb" {
  description = "EBS storage per broker of a created MSK cluster (GiB)."
  type        = number
  default     = 100

  validation {
    condition     = var.msk_broker_volume_size_gb >= 1 && var.msk_broker_volume_size_gb <= 16384
    error_message = "msk_broker_volume_size_gb must be between 1 and 16384."
  }
}

variable "msk_kms_key_arn" {
  description = "KMS key for MSK encryption at rest; null uses the AWS managed key (data is encrypted at rest either way)."
  type        = string
  default     = null

  validation {
    condition     = var.msk_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.msk_kms_key_arn))
    error_message = "msk_kms_key_arn must be null or a KMS key ARN."
  }
}

variable "msk_enhanced_monitoring" {
  description = "Monitoring level of a created MSK cluster. Consumer lag (SumOffsetLag) is published at every level; the per-topic MessagesInPerSec the DLQ alarm needs starts at PER_TOPIC_PER_BROKER."
  type        = string
  default     = "PER_TOPIC_PER_BROKER"

  validation {
    condition     = contains(["PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION"], var.msk_enhanced_monitoring)
    error_message = "msk_enhanced_monitoring must be PER_TOPIC_PER_BROKER or PER_TOPIC_PER_PARTITION (lower levels lack per-topic MessagesInPerSec for the DLQ alarm)."
  }
}

variable "msk_client_cidr_blocks" {
  description = "CIDRs of other Kafka clients (the upload services that publish requests, verdict consumers) allowed to the created cluster's IAM port 9098. They also need kafka-cluster IAM permissions of their own (see the kafka_topic_arns output). The workers are always allowed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.msk_client_cidr_blocks : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "msk_client_cidr_blocks must be valid IPv4 CIDRs, none of them /0."
  }
}

variable "msk_cluster_name" {
  description = "Name of an EXISTING MSK cluster, for the AWS/Kafka lag and DLQ metrics when lag_metric_source = \"msk\" and create_msk_cluster = false (that cluster needs PER_TOPIC_PER_BROKER monitoring for the DLQ alarm)."
  type        = string
  default     = null

  validation {
    condition     = var.msk_cluster_name == null || can(regex("^[0-9A-Za-z][0-9A-Za-z-]{0,63}$", var.msk_cluster_name))
    error_message = "msk_cluster_name must be null or a valid MSK cluster name."
  }
}

# --- Scaling on consumer lag, and alarms ---------------------------------------------------------

variable "lag_metric_source" {
  description = <<-EOT
    Where consumer-group lag and topic message rates come from.
    "msk": AWS/Kafka SumOffsetLag (dims Cluster Name, Consumer Group, Topic) and per-topic MessagesInPerSec (PER_TOPIC_PER_BROKER).
    "custom": a namespace (custom_metric_namespace) that a lag exporter publishes every 60 s for non-MSK clusters:
      <custom_lag_metric_name> (Count; dims ConsumerGroup, Topic) = the group's total lag on the topic, and
      <custom_topic_messages_metric_name> (Count; dim Topic) = messages produced to the topic in the period.
  EOT
  type        = string
  default     = "msk"

  validation {
    condition     = contains(["msk", "custom"], var.lag_metric_source)
    error_message = "lag_metric_source must be \"msk\" or \"custom\"."
  }
}

variable "custom_metric_namespace" {
  description = "CloudWatch namespace of the custom lag metrics (lag_metric_source = \"custom\")."
  type        = string
  default     = "ModerationWorker/Kafka"

  validation {
    condition     = can(regex("^[A-Za-z0-9._#:/-]{1,255}$", var.custom_metric_namespace)) && !startswith(var.custom_metric_namespace, "AWS/")
    error_message = "custom_metric_namespace must be a valid namespace that does not start with AWS/."
  }
}

variable "custom_lag_metric_name" {
  description = "Metric with the consumer group's total lag (dims ConsumerGroup, Topic) in the custom namespace."
  type        = string
  default     = "ConsumerGroupLag"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,255}$", var.custom_lag_metric_name))
    error_message = "custom_lag_metric_name must be a metric name of letters, digits, '.', '_', '-'."
  }
}

variable "custom_topic_messages_metric_name" {
  description = "Metric with the messages produced per period to a topic (dim Topic) in the custom namespace; the DLQ alarm sums it per minute."
  type        = string
  default     = "TopicMessagesIn"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,255}$", var.custom_topic_messages_metric_name))
    error_message = "custom_topic_messages_metric_name must be a metric name of letters, digits, '.', '_', '-'."
  }
}

variable "allow_custom_metric_publishing" {
  description = "Let the workers publish to custom_metric_namespace (cloudwatch:PutMetricData, conditioned on that namespace) - for a lag exporter running on the worker hosts."
  type        = bool
  default     = false
}

variable "target_lag_per_instance" {
  description = "Target-tracking set point: input-topic lag (messages) per in-service worker. The fleet grows when lag / workers stays above it."
  type        = number
  default     = 200

  validation {
    condition     = var.target_lag_per_instance > 0
    error_message = "target_lag_per_instance must be > 0."
  }
}

variable "scale_in_enabled" {
  description = "Let the target-tracking policy remove workers when lag falls (false: scale out only)."
  type        = bool
  default     = true
}

variable "lag_alarm_threshold" {
  description = "Lag alarm: total input-topic lag (messages) considered too high."
  type        = number
  default     = 5000

  validation {
    condition     = var.lag_alarm_threshold > 0
    error_message = "lag_alarm_threshold must be > 0."
  }
}

variable "lag_alarm_minutes" {
  description = "Lag alarm: consecutive minutes above lag_alarm_threshold before it fires."
  type        = number
  default     = 15

  validation {
    condition     = var.lag_alarm_minutes >= 1 && var.lag_alarm_minutes <= 1440 && floor(var.lag_alarm_minutes) == var.lag_alarm_minutes
    error_message = "lag_alarm_minutes must be a whole number between 1 and 1440."
  }
}

variable "dlq_alarm_threshold_per_minute" {
  description = "DLQ alarm: messages per minute into the dead-letter topic above which it fires (0: any message)."
  type        = number
  default     = 5

  validation {
    condition     = var.dlq_alarm_threshold_per_minute >= 0
    error_message = "dlq_alarm_threshold_per_minute must be >= 0."
  }
}

variable "dlq_alarm_minutes" {
  description = "DLQ alarm: consecutive minutes above the threshold before it fires."
  type        = number
  default     = 5

  validation {
    condition     = var.dlq_alarm_minutes >= 1 && var.dlq_alarm_minutes <= 1440 && floor(var.dlq_alarm_minutes) == var.dlq_alarm_minutes
    error_message = "dlq_alarm_minutes must be a whole number between 1 and 1440."
  }
}

variable "alarm_sns_topic_arn" {
  description = "Optional SNS topic notified when an alarm fires and when it recovers."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_sns_topic_arn == null || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be null or an SNS topic ARN."
  }
}
