# The worker fleet: a launch template (GPU AMI, IMDSv2, encrypted gp3 root, gzip user data that
# installs the worker's systemd units) and an Auto Scaling group that mixes on-demand and spot,
# holds new instances until the worker is ready and rolls out new template versions safely.

resource "aws_cloudwatch_log_group" "workers" {
  #checkov:skip=CKV_AWS_338:Operational worker logs; retention is a variable (default 90 days). Verdicts, the audit record, are persisted downstream from the results topic, not in these logs.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (log_kms_key_arn) because its key policy must be prepared for the Logs service.
  name              = "/moderation-worker/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.common_tags
}

# The CloudWatch agent writes the scraped /metrics here as embedded metric format (EMF) events,
# from which CloudWatch extracts the metrics.
resource "aws_cloudwatch_log_group" "metrics" {
  #checkov:skip=CKV_AWS_338:Metric events only (the metrics themselves live in CloudWatch Metrics); retention is a variable.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (log_kms_key_arn).
  name              = "/moderation-worker/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.common_tags
}

resource "aws_launch_template" "workers" {
  name_prefix            = "${var.name}-"
  description            = "Moderation worker on ${join("/", local.instance_types)}; image ${var.container_image}"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  ebs_optimized          = true
  update_default_version = true
  # gzip: the script with its units is above EC2's 16 KB user-data limit in plain text; cloud-init
  # detects and unpacks gzip.
  user_data = module.boot.user_data_base64

  iam_instance_profile {
    arn = aws_iam_instance_profile.workers.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.workers.id]
  }

  metadata_options {
    #checkov:skip=CKV_AWS_341:Hop limit 2 is required for the containerised worker (bridge network, one extra hop) to get instance-role credentials from IMDSv2; tokens stay required.
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size_gb
      encrypted             = true
      kms_key_id            = var.root_volume_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.common_tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.common_tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "network-interface"
    tags          = merge(local.common_tags, { Name = var.name })
  }

  tags = local.common_tags

  lifecycle {
    precondition {
      condition     = local.kafka_choice_ok
      error_message = "Set exactly one Kafka source: kafka_bootstrap_servers (an existing cluster) or create_msk_cluster = true (then leave kafka_bootstrap_servers empty)."
    }

    precondition {
      condition     = !var.create_msk_cluster || (contains(["SASL_SSL", "-"], coalesce(var.kafka_security_protocol, "-")) && var.kafka_sasl_mechanism == null && var.kafka_sasl_username == null && var.kafka_sasl_password_ssm_parameter == null)
      error_message = "A created MSK cluster takes IAM clients only (SASL_SSL, AWS_MSK_IAM, set by the module): leave kafka_security_protocol null (or SASL_SSL) and the kafka_sasl_* settings unset."
    }

    precondition {
      condition     = (var.kafka_sasl_password_ssm_parameter == null) || (var.kafka_sasl_mechanism != null && var.kafka_sasl_username != null)
      error_message = "kafka_sasl_password_ssm_parameter needs kafka_sasl_mechanism and kafka_sasl_username."
    }

    precondition {
      condition     = (local.weights_source == "s3") == (var.weights_s3_uri != null)
      error_message = "model_weights_source = \"s3\" needs weights_s3_uri, and weights_s3_uri is only used with \"s3\"."
    }

    precondition {
      condition     = !var.create_msk_cluster || var.kafka_topic_partitions >= var.max_size
      error_message = "kafka_topic_partitions must be >= max_size: a consumer group gives each partition to one worker, so workers beyond the partition count sit idle."
    }
  }
}

resource "aws_autoscaling_group" "workers" {
  # No load balancer, so health_check_type stays EC2: the worker's health reaches the group through
  # the instance watchdog (/livez failing watchdog_failure_threshold times -> set-instance-health
  # Unhealthy -> replaced). The grace period starts when the launch hook completes.
  name                      = local.asg_name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = var.health_check_grace_period_seconds
  default_instance_warmup   = var.instance_warmup_seconds
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]
  # Launch a replacement when EC2 signals that a spot instance is at elevated risk.
  capacity_rebalance  = true
  metrics_granularity = "1Minute"
  # GroupInServiceInstances feeds the lag-per-instance metric, GroupDesiredCapacity the start from zero.
  enabled_metrics = [
    "GroupDesiredCapacity", "GroupInServiceInstances", "GroupMaxSize", "GroupMinSize",
    "GroupPendingInstances", "GroupTerminatingInstances", "GroupTotalInstances",
  ]

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = var.on_demand_base_capacity
      on_demand_percentage_above_base_capacity = 100 - var.spot_percentage_above_base
      on_demand_allocation_strategy            = "prioritized"
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.workers.id
        version            = aws_launch_template.workers.latest_version
      }

      dynamic "override" {
        for_each = local.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  # Health replacements and rebalancing also launch first, then terminate.
  instance_maintenance_policy {
    min_healthy_percentage = var.instance_refresh_min_healthy_percentage
    max_healthy_percentage = var.instance_refresh_max_healthy_percentage
  }

  # A new launch template version (image, AMI, settings) replaces the fleet gradually: new
  # instances first (max 200 %), each held by the launch hook until /readyz; a refresh whose
  # instances do not become ready, or during which the dead-letter alarm fires, rolls back.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = var.instance_refresh_min_healthy_percentage
      max_healthy_percentage = var.instance_refresh_max_healthy_percentage
      instance_warmup        = tostring(var.instance_warmup_seconds)
      skip_matching          = true
      auto_rollback          = true

      dynamic "alarm_specification" {
        for_each = var.instance_refresh_alarm_rollback ? [aws_cloudwatch_metric_alarm.dlq_rate.alarm_name] : []
        content {
          alarms = [alarm_specification.value]
        }
      }
    }
  }

  # New instances wait here until the worker is ready: the instance completes the hook with
  # CONTINUE once /readyz passes, or ABANDON (also the default on timeout) when it gives up.
  initial_lifecycle_hook {
    name                 = local.launch_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    heartbeat_timeout    = var.launch_timeout_seconds
    default_result       = "ABANDON"
  }

  # Scale-in and refresh wait here while the instance drains its worker.
  initial_lifecycle_hook {
    name                 = local.drain_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = local.drain_heartbeat_sec
    default_result       = "CONTINUE"
  }

  dynamic "tag" {
    for_each = merge(local.common_tags, { Name = var.name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  # No instance boots before its role may complete hooks, read its secrets and reach Kafka.
  depends_on = [aws_iam_role_policy.workers]

  lifecycle {
    # The scaling policies own the desired count after creation.
    ignore_changes = [desired_capacity]

    precondition {
      condition     = var.min_size <= var.max_size
      error_message = "min_size must be <= max_size."
    }

    precondition {
      condition     = var.desired_capacity == null || try(var.desired_capacity >= var.min_size && var.desired_capacity <= var.max_size, false)
      error_message = "desired_capacity must lie between min_size and max_size."
    }
  }
}
