# Shared lookups, the values derived from the inputs, and the boot files (modules/boot). Resources
# live in the files named after their concern: iam.tf, network.tf, compute.tf, bucket.tf, msk.tf,
# scaling.tf, alarms.tf.

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
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  # An AMI id is not a secret; SSM values are marked sensitive by the provider.
  ami_id = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)

  common_tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "moderation-worker"
    "moderation-worker/fleet"   = var.name
  })

  asg_name        = var.name
  launch_hook     = "${var.name}-launch"
  drain_hook_name = "${var.name}-drain"
  container_name  = "moderation-worker"
  # The drain hook waits for the full grace period plus the time to complete the hook.
  drain_heartbeat_sec = var.stop_timeout_seconds + 120
  # Built from the name, not read from the group: the role policy must exist before the group
  # launches its first instance, so it cannot depend on the group resource.
  asg_arn = "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.asg_name}"
  # Launch template first, then the others in the caller's order (on-demand priority).
  instance_types = distinct(concat([var.instance_type], var.instance_types))

  # --- Images bucket: exactly one of create / existing (precondition on aws_iam_role_policy.workers).
  create_bucket      = var.create_bucket_name != null
  bucket_choice_ok   = (var.create_bucket_name == null) != (var.existing_bucket_name == null)
  bucket_name        = coalesce(var.create_bucket_name, var.existing_bucket_name, "invalid-bucket-choice")
  bucket_arn         = "arn:${local.partition}:s3:::${local.bucket_name}"
  images_objects_arn = "${local.bucket_arn}/${var.images_prefix}*"
  images_region      = local.create_bucket ? local.region : coalesce(var.images_bucket_region, local.region)

  # --- Weights: s3 (recommended) when a folder is given, otherwise the Hub cache.
  weights_source = var.model_weights_source != null ? var.model_weights_source : (var.weights_s3_uri != null ? "s3" : "hub")
  weights_s3     = local.weights_source == "s3" && var.weights_s3_uri != null
  weights_bucket = local.weights_s3 ? split("/", trimprefix(var.weights_s3_uri, "s3://"))[0] : ""
  weights_prefix = local.weights_s3 ? trimprefix(trimprefix(var.weights_s3_uri, "s3://"), "${local.weights_bucket}/") : ""

  # --- Kafka: an existing cluster's servers, or the created MSK cluster's IAM (SASL_SSL) brokers.
  kafka_choice_ok   = var.create_msk_cluster != (var.kafka_bootstrap_servers != "")
  bootstrap_servers = var.create_msk_cluster ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam : var.kafka_bootstrap_servers
  security_protocol = var.create_msk_cluster ? "SASL_SSL" : var.kafka_security_protocol
  sasl_mechanism    = var.create_msk_cluster ? "AWS_MSK_IAM" : var.kafka_sasl_mechanism
  msk_subnet_ids    = var.msk_subnet_ids != null ? var.msk_subnet_ids : var.subnet_ids
  msk_broker_count  = var.msk_broker_count != null ? var.msk_broker_count : 3
  # Cluster name used as the AWS/Kafka metric dimension.
  msk_metrics_cluster = var.create_msk_cluster ? var.name : var.msk_cluster_name
  topics              = [var.input_topic, var.results_topic, var.dlq_topic, var.review_topic]

  # MSK IAM resources: arn:...:topic/<cluster name>/<cluster uuid>/<topic>, the same for group/.
  msk_arn = var.create_msk_cluster ? aws_msk_cluster.this[0].arn : ""
  msk_topic_arns = var.create_msk_cluster ? {
    for t in local.topics : t => "${replace(local.msk_arn, ":cluster/", ":topic/")}/${t}"
  } : {}
  msk_group_arn = var.create_msk_cluster ? "${replace(local.msk_arn, ":cluster/", ":group/")}/${var.group_id}" : ""

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
    MODERATION_KAFKA_SASL_MECHANISM    = local.sasl_mechanism
    MODERATION_KAFKA_SASL_USERNAME     = var.kafka_sasl_username
    MODERATION_GROUP_ID                = var.group_id
    MODERATION_INPUT_TOPIC             = var.input_topic
    MODERATION_RESULTS_TOPIC           = var.results_topic
    MODERATION_REVIEW_TOPIC            = var.review_topic
    MODERATION_DLQ_TOPIC               = var.dlq_topic
    MODERATION_S3_REGION               = local.images_region
    MODERATION_MODEL_ID                = local.weights_source == "s3" ? var.weights_container_path : var.model_id
    MODERATION_MODEL_REVISION          = var.model_revision
    MODERATION_MODEL_LOCAL_FILES_ONLY  = local.weights_source == "hub" ? null : "true"
    MODERATION_HEALTH_PORT             = tostring(var.health_port)
    MODERATION_LOG_FORMAT              = "json"
  } : k => v if v != null }

  # Explicit worker_environment entries may override MODERATION_LOG_FORMAT; the rest is refused by validation.
  worker_env = merge(local.worker_env_managed, var.worker_environment, {
    # botocore (S3, and MSK IAM signing in kafka-python) finds the region here; credentials come
    # from the instance role through IMDSv2.
    AWS_DEFAULT_REGION = local.region
    # "hub": the cache is a host directory mounted at HF_HOME, filled by the first start on an
    # instance and reused by restarts. "s3"/"image": the weights are local, never downloaded.
    HF_HOME        = var.hf_cache_container_path
    HF_HUB_OFFLINE = local.weights_source == "hub" ? "0" : "1"
  })
}

# The instance's boot files (user data, node script, systemd units, CloudWatch agent config).
module "boot" {
  source = "./modules/boot"

  config = {
    name                     = var.name
    region                   = local.region
    asg_name                 = local.asg_name
    launch_hook_name         = local.launch_hook
    drain_hook_name          = local.drain_hook_name
    container_name           = local.container_name
    image                    = var.container_image
    command_args             = var.container_command
    env                      = local.worker_env
    health_port              = var.health_port
    stop_timeout             = var.stop_timeout_seconds
    spot_drain_seconds       = var.spot_drain_seconds
    ecr_registry             = local.ecr_registry
    ecr_region               = local.ecr_region
    kafka_password_parameter = var.kafka_sasl_password_ssm_parameter == null ? "" : var.kafka_sasl_password_ssm_parameter
    hf_token_parameter       = var.hf_token_ssm_parameter == null ? "" : var.hf_token_ssm_parameter
    weights_source           = local.weights_source
    weights_s3_uri           = var.weights_s3_uri == null ? "" : var.weights_s3_uri
    weights_host_path        = var.weights_host_path
    weights_container_path   = var.weights_container_path
    hf_cache_host_path       = var.hf_cache_host_path
    hf_cache_container_path  = var.hf_cache_container_path
    container_uid            = var.container_uid
    watchdog_interval        = var.watchdog_interval_seconds
    watchdog_failures        = var.watchdog_failure_threshold
    watchdog_grace_seconds   = var.watchdog_start_grace_seconds
    # Give up a minute before the hook times out, so the ABANDON is ours and logged.
    launch_deadline_seconds  = var.launch_timeout_seconds - 60
    topics                   = var.create_msk_cluster ? local.topics : []
    topic_partitions         = var.kafka_topic_partitions
    topic_replication_factor = 3
    topic_retention_ms       = var.kafka_topic_retention_ms
    log_group                = aws_cloudwatch_log_group.workers.name
    metrics_log_group        = aws_cloudwatch_log_group.metrics.name
    metrics_namespace        = var.metrics_namespace
  }
}
