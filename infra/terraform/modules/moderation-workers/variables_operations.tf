# Inputs for running the fleet: capacity mix and spot, health and rollouts, weights and secrets,
# topics, and the alarms added on top of the lag ones. The rest is in variables.tf.

# --- Capacity mix: on-demand base, spot above it ----------------------------------------------------

variable "instance_types" {
  description = "Further single-GPU types the group may launch after instance_type, in priority order (more spot pools, fewer interruptions). Each must fit the model: the default adds g5.xlarge (A10G, 24 GB)."
  type        = list(string)
  default     = ["g5.xlarge"]

  validation {
    # The same single-GPU rule as instance_type (a validation may only read its own variable).
    condition     = alltrue([for t in var.instance_types : can(regex("^((g4dn|g5|g6|g6e)\\.(2|4|8|16)?xlarge|gr6\\.(4|8)xlarge)$", t))])
    error_message = "instance_types must be single-GPU NVIDIA types (g4dn, g5, g6, g6e in xlarge..16xlarge without 12xlarge, gr6.4xlarge, gr6.8xlarge); multi-GPU sizes such as g6.12xlarge are refused."
  }
}

variable "on_demand_base_capacity" {
  description = "Workers that are always on-demand (the first ones launched); capacity above it follows spot_percentage_above_base."
  type        = number
  default     = 1

  validation {
    condition     = var.on_demand_base_capacity >= 0 && floor(var.on_demand_base_capacity) == var.on_demand_base_capacity
    error_message = "on_demand_base_capacity must be a whole number >= 0."
  }
}

variable "spot_percentage_above_base" {
  description = "Share (%) of the capacity above on_demand_base_capacity that runs on spot (price-capacity-optimized over instance_type and instance_types); 0: all on-demand."
  type        = number
  default     = 100

  validation {
    condition     = var.spot_percentage_above_base >= 0 && var.spot_percentage_above_base <= 100 && floor(var.spot_percentage_above_base) == var.spot_percentage_above_base
    error_message = "spot_percentage_above_base must be a whole number between 0 and 100."
  }
}

variable "spot_drain_seconds" {
  description = "Grace period after SIGTERM when a spot interruption notice arrives (the instance is reclaimed two minutes after the notice, polled every 5 s). Shorter than stop_timeout_seconds on purpose: the worker commits what it finished, the rest is redelivered."
  type        = number
  default     = 90

  validation {
    condition     = var.spot_drain_seconds >= 10 && var.spot_drain_seconds <= 110 && floor(var.spot_drain_seconds) == var.spot_drain_seconds
    error_message = "spot_drain_seconds must be a whole number between 10 and 110 (the notice comes two minutes before the instance is reclaimed)."
  }
}

# --- Health and rollouts ---------------------------------------------------------------------------

variable "health_check_grace_period_seconds" {
  description = "ASG health check grace period. It starts once the launch hook is completed (the worker is ready), so it only has to cover the first minutes InService. health_check_type stays EC2 (there is no load balancer); the worker's own health reaches the group through the instance watchdog (set-instance-health)."
  type        = number
  default     = 300

  validation {
    condition     = var.health_check_grace_period_seconds >= 0 && var.health_check_grace_period_seconds <= 7200
    error_message = "health_check_grace_period_seconds must be between 0 and 7200."
  }
}

variable "launch_timeout_seconds" {
  description = "Heartbeat timeout of the launch lifecycle hook: a new instance has this long from launch to prepare (weights, image) and pass /readyz; then it is put in service (CONTINUE), otherwise abandoned and terminated. Long enough for the weights copy and the model load."
  type        = number
  default     = 1800

  validation {
    condition     = var.launch_timeout_seconds >= 300 && var.launch_timeout_seconds <= 7200 && floor(var.launch_timeout_seconds) == var.launch_timeout_seconds
    error_message = "launch_timeout_seconds must be a whole number between 300 and 7200 (the lifecycle hook's limit)."
  }
}

variable "watchdog_interval_seconds" {
  description = "Seconds between the instance watchdog's checks of /livez."
  type        = number
  default     = 30

  validation {
    condition     = var.watchdog_interval_seconds >= 5 && var.watchdog_interval_seconds <= 600 && floor(var.watchdog_interval_seconds) == var.watchdog_interval_seconds
    error_message = "watchdog_interval_seconds must be a whole number between 5 and 600."
  }
}

variable "watchdog_failure_threshold" {
  description = "Consecutive failed /livez checks after which the watchdog marks the instance Unhealthy, so the group replaces it (5 x 30 s: a worker down or hung for 2.5 minutes)."
  type        = number
  default     = 5

  validation {
    condition     = var.watchdog_failure_threshold >= 1 && var.watchdog_failure_threshold <= 100 && floor(var.watchdog_failure_threshold) == var.watchdog_failure_threshold
    error_message = "watchdog_failure_threshold must be a whole number between 1 and 100."
  }
}

variable "watchdog_start_grace_seconds" {
  description = "Seconds after boot before the watchdog counts failures (matters after a reboot: prepare and the container start). Before the first launch completes the watchdog never acts; the launch hook decides."
  type        = number
  default     = 600

  validation {
    condition     = var.watchdog_start_grace_seconds >= 0 && var.watchdog_start_grace_seconds <= 7200
    error_message = "watchdog_start_grace_seconds must be between 0 and 7200."
  }
}

variable "instance_refresh_max_healthy_percentage" {
  description = "Upper bound of in-service capacity during an instance refresh: 200 launches replacements before terminating old workers."
  type        = number
  default     = 200

  validation {
    condition     = var.instance_refresh_max_healthy_percentage >= 100 && var.instance_refresh_max_healthy_percentage <= 200
    error_message = "instance_refresh_max_healthy_percentage must be between 100 and 200."
  }
}

variable "instance_refresh_alarm_rollback" {
  description = "Roll an instance refresh back when the dead-letter alarm fires during it (a bad image that dead-letters everything). The refresh also rolls back (auto_rollback) when new instances fail to launch or become ready."
  type        = bool
  default     = true
}

# --- Weights and the Hub token ---------------------------------------------------------------------

variable "weights_s3_uri" {
  description = "S3 folder with the model weights (model_weights_source = \"s3\"): the files of the model at model_revision, e.g. from `huggingface-cli download MODEL --revision SHA --local-dir DIR` and `aws s3 sync DIR s3://BUCKET/MODEL/SHA/`. Recommended layout: s3://<bucket>/<model_id>/<model_revision>/. The role may read exactly this prefix."
  type        = string
  default     = null

  validation {
    condition     = var.weights_s3_uri == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/([A-Za-z0-9!_.'()=-]+/)+$", coalesce(var.weights_s3_uri, "x")))
    error_message = "weights_s3_uri must be null or s3://bucket/prefix/ with a non-empty prefix ending in '/', no wildcards."
  }
}

variable "weights_kms_key_arn" {
  description = "Customer managed KMS key the weights objects are encrypted with; the role gets kms:Decrypt on it through S3 only. null: SSE-S3 or aws/s3, which need no grant."
  type        = string
  default     = null

  validation {
    condition     = var.weights_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.weights_kms_key_arn))
    error_message = "weights_kms_key_arn must be null or a KMS key ARN."
  }
}

variable "weights_host_path" {
  description = "Host folder the S3 weights are copied to. The NVMe instance store is mounted here when the instance type has one; otherwise it is a folder on the root volume."
  type        = string
  default     = "/var/lib/moderation-worker/weights"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.weights_host_path))
    error_message = "weights_host_path must be an absolute path of letters, digits, '_', '.', '/', '-'."
  }
}

variable "weights_container_path" {
  description = "Where the S3 weights are mounted (read-only) in the container; MODERATION_MODEL_ID is set to it."
  type        = string
  default     = "/models/weights"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.weights_container_path))
    error_message = "weights_container_path must be an absolute path of letters, digits, '_', '.', '/', '-'."
  }
}

variable "hf_token_ssm_parameter" {
  description = "Name of a SecureString SSM parameter holding a Hugging Face token (gated or private models with model_weights_source = \"hub\"). Read at every boot into the root-only env file on tmpfs as HF_TOKEN; never in user data, state or logs. The role may read only this parameter."
  type        = string
  default     = null

  validation {
    condition     = var.hf_token_ssm_parameter == null || can(regex("^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", coalesce(var.hf_token_ssm_parameter, "x")))
    error_message = "hf_token_ssm_parameter must be null or an SSM parameter name such as /moderation/hf-token."
  }
}

variable "secrets_kms_key_arn" {
  description = "Customer managed KMS key of the SecureString parameters (kafka_sasl_password_ssm_parameter, hf_token_ssm_parameter); the role gets kms:Decrypt on it through SSM only. null: the AWS managed aws/ssm key, which needs no grant."
  type        = string
  default     = null

  validation {
    condition     = var.secrets_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.secrets_kms_key_arn))
    error_message = "secrets_kms_key_arn must be null or a KMS key ARN."
  }
}

# --- Topics (created MSK cluster) -------------------------------------------------------------------

variable "kafka_topic_partitions" {
  description = "Partitions of the four topics the module creates on its MSK cluster. A consumer group uses at most one worker per partition, so it must be >= max_size."
  type        = number
  default     = 12

  validation {
    condition     = var.kafka_topic_partitions >= 1 && var.kafka_topic_partitions <= 1000 && floor(var.kafka_topic_partitions) == var.kafka_topic_partitions
    error_message = "kafka_topic_partitions must be a whole number between 1 and 1000."
  }
}

variable "kafka_topic_retention_ms" {
  description = "retention.ms of the four topics the module creates (default 7 days). Set once at creation: existing topics are left as they are."
  type        = number
  default     = 604800000

  validation {
    condition     = var.kafka_topic_retention_ms >= 3600000 && floor(var.kafka_topic_retention_ms) == var.kafka_topic_retention_ms
    error_message = "kafka_topic_retention_ms must be a whole number of milliseconds, at least one hour."
  }
}

variable "msk_offsets_retention_minutes" {
  description = "offsets.retention.minutes of the created cluster: how long the committed offsets of a group without members are kept (default 30 days). With min_size = 0 the group may be empty for long; once its offsets expire MSK publishes no lag, the fleet no longer scales out from zero and new workers replay the topic from the earliest offset. Keep it longer than any idle period you expect."
  type        = number
  default     = 43200

  validation {
    condition     = var.msk_offsets_retention_minutes >= 1440 && floor(var.msk_offsets_retention_minutes) == var.msk_offsets_retention_minutes
    error_message = "msk_offsets_retention_minutes must be a whole number of at least 1440 (one day)."
  }
}

# --- More alarms, and the metrics the CloudWatch agent ships ------------------------------------------

variable "time_lag_alarm_seconds" {
  description = "Time-lag alarm (MSK only): EstimatedMaxTimeLag of the group on the input topic, in seconds, considered too old."
  type        = number
  default     = 900

  validation {
    condition     = var.time_lag_alarm_seconds > 0
    error_message = "time_lag_alarm_seconds must be > 0."
  }
}

variable "time_lag_alarm_minutes" {
  description = "Time-lag alarm: consecutive minutes above time_lag_alarm_seconds before it fires."
  type        = number
  default     = 10

  validation {
    condition     = var.time_lag_alarm_minutes >= 1 && var.time_lag_alarm_minutes <= 1440 && floor(var.time_lag_alarm_minutes) == var.time_lag_alarm_minutes
    error_message = "time_lag_alarm_minutes must be a whole number between 1 and 1440."
  }
}

variable "heartbeat_alarm_minutes" {
  description = "Results heartbeat: minutes without a single verdict while the input topic has lag (or without any data at all) before it fires. Longer than a cold start from zero (launch_timeout_seconds)."
  type        = number
  default     = 45

  validation {
    condition     = var.heartbeat_alarm_minutes >= 5 && var.heartbeat_alarm_minutes <= 1440 && floor(var.heartbeat_alarm_minutes) == var.heartbeat_alarm_minutes
    error_message = "heartbeat_alarm_minutes must be a whole number between 5 and 1440."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of what the agent on each instance publishes: the worker's /metrics (Fleet dimension) and nvidia_gpu metrics."
  type        = string
  default     = "ModerationWorker"

  validation {
    condition     = can(regex("^[A-Za-z0-9._#:/-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be a valid namespace that does not start with AWS/."
  }
}
