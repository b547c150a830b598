# Shared lookups and the values derived from the inputs. Resources live in the files named after
# their concern: iam.tf, network.tf, compute.tf, bucket.tf, msk.tf, scaling.tf, alarms.tf.

data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

# The GPU AMI: the AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023) ships the
# NVIDIA driver, Docker and the NVIDIA Container Toolkit, so `docker run --gpus all` works at boot.
data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0

  name = var.ami_ssm_parameter_name
}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  # An AMI id is not a secret; SSM values are marked sensitive by the provider.
  ami_id = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)

  common_tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "moderation-worker"
    "moderation-worker/fleet"   = var.name
  })

  asg_name            = var.name
  drain_hook_name     = "${var.name}-drain"
  container_name      = "moderation-worker"
  drain_heartbeat_sec = var.stop_timeout_seconds + 120

  # --- Images bucket: exactly one of create / existing (precondition on aws_iam_role_policy.workers).
  create_bucket      = var.create_bucket_name != null
  bucket_choice_ok   = (var.create_bucket_name == null) != (var.existing_bucket_name == null)
  bucket_name        = coalesce(var.create_bucket_name, var.existing_bucket_name, "invalid-bucket-choice")
  bucket_arn         = "arn:${local.partition}:s3:::${local.bucket_name}"
  images_objects_arn = "${local.bucket_arn}/${var.images_prefix}*"
  images_region      = local.create_bucket ? local.region : coalesce(var.images_bucket_region, local.region)

  # --- Kafka: an existing cluster's servers, or the created MSK cluster's TLS brokers.
  kafka_choice_ok   = var.create_msk_cluster != (var.kafka_bootstrap_servers != "")
  bootstrap_servers = var.create_msk_cluster ? aws_msk_cluster.this[0].bootstrap_brokers_tls : var.kafka_bootstrap_servers
  security_protocol = var.kafka_security_protocol != null ? var.kafka_security_protocol : (var.create_msk_cluster ? "SSL" : null)
  msk_subnet_ids    = var.msk_subnet_ids != null ? var.msk_subnet_ids : var.subnet_ids
  msk_broker_count  = var.msk_broker_count != null ? var.msk_broker_count : length(local.msk_subnet_ids)
  # Cluster name used as the AWS/Kafka metric dimension.
  msk_metrics_cluster = var.create_msk_cluster ? var.name : var.msk_cluster_name

  # --- Container image: ECR repositories get a pull grant on exactly that repository.
  ecr_match    = try(regex("^(?P<account>[0-9]{12})\\.dkr\\.ecr(?P<fips>-fips)?\\.(?P<region>[a-z0-9-]+)\\.amazonaws\\.com(?P<cn>\\.cn)?/(?P<repository>[^:@]+)", var.container_image), null)
  is_ecr       = local.ecr_match != null
  ecr_registry = local.is_ecr ? split("/", var.container_image)[0] : ""
  ecr_region   = local.is_ecr ? local.ecr_match.region : ""
  ecr_repository_arn = local.is_ecr ? format(
    "arn:%s:ecr:%s:%s:repository/%s",
    local.partition, local.ecr_match.region, local.ecr_match.account, local.ecr_match.repository,
  ) : null

  # --- Worker settings, as the MODERATION_* variables moderation_worker.config.Settings reads.
  # null values are left out so the worker's own defaults apply.
  worker_env_managed = { for k, v in {
    MODERATION_KAFKA_BOOTSTRAP_SERVERS = local.bootstrap_servers
    MODERATION_KAFKA_SECURITY_PROTOCOL = local.security_protocol
    MODERATION_KAFKA_SASL_MECHANISM    = var.kafka_sasl_mechanism
    MODERATION_KAFKA_SASL_USERNAME     = var.kafka_sasl_username
    MODERATION_GROUP_ID                = var.group_id
    MODERATION_INPUT_TOPIC             = var.input_topic
    MODERATION_RESULTS_TOPIC           = var.results_topic
    MODERATION_REVIEW_TOPIC            = var.review_topic
    MODERATION_DLQ_TOPIC               = var.dlq_topic
    MODERATION_S3_REGION               = local.images_region
    MODERATION_MODEL_ID                = var.model_id
    MODERATION_MODEL_REVISION          = var.model_revision
    MODERATION_HEALTH_PORT             = tostring(var.health_port)
    MODERATION_LOG_FORMAT              = "json"
  } : k => v if v != null }

  # Explicit worker_environment entries may override MODERATION_LOG_FORMAT; the rest is refused by validation.
  worker_env = merge(local.worker_env_managed, var.worker_environment, {
    # "hub": the cache is a host directory mounted at HF_HOME, filled by the first start on an
    # instance and reused by restarts. "image": the weights are in the image, never downloaded.
    HF_HOME        = var.hf_cache_container_path
    HF_HUB_OFFLINE = var.model_weights_source == "image" ? "1" : "0"
  })
  mount_hf_cache = var.model_weights_source == "hub"

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    container_name          = local.container_name
    image                   = var.container_image
    command_args            = join(" ", [for a in var.container_command : "'${a}'"])
    env_lines               = [for k in sort(keys(local.worker_env)) : "${k}=${local.worker_env[k]}"]
    sasl_password_parameter = var.kafka_sasl_password_ssm_parameter == null ? "" : var.kafka_sasl_password_ssm_parameter
    ecr_registry            = local.ecr_registry
    ecr_region              = local.ecr_region
    health_port             = var.health_port
    stop_timeout            = var.stop_timeout_seconds
    mount_hf_cache          = local.mount_hf_cache
    hf_cache_host_path      = var.hf_cache_host_path
    hf_cache_container_path = var.hf_cache_container_path
    container_uid           = var.container_uid
    log_group               = aws_cloudwatch_log_group.workers.name
    asg_name                = local.asg_name
    drain_hook_name         = local.drain_hook_name
  })
}
