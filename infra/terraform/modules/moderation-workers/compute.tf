# The worker fleet: a launch template (GPU AMI, IMDSv2, encrypted gp3 root, user data running the
# container with the GPU) and an Auto Scaling group that rolls out new template versions.

resource "aws_cloudwatch_log_group" "workers" {
  #checkov:skip=CKV_AWS_338:Operational worker logs; retention is a variable (default 90 days). Verdicts, the audit record, are persisted downstream from the results topic, not in these logs.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (log_kms_key_arn) because its key policy must be prepared for the Logs service.
  name              = "/moderation-worker/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.common_tags
}

resource "aws_launch_template" "workers" {
  name_prefix            = "${var.name}-"
  description            = "Moderation worker on ${var.instance_type}; image ${var.container_image}"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  ebs_optimized          = true
  update_default_version = true
  user_data              = base64encode(local.user_data)

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
      condition     = !var.create_msk_cluster || local.security_protocol == "SSL"
      error_message = "A created MSK cluster speaks TLS only (unauthenticated clients): kafka_security_protocol must be null or SSL."
    }

    precondition {
      condition     = (var.kafka_sasl_password_ssm_parameter == null) || (var.kafka_sasl_mechanism != null && var.kafka_sasl_username != null)
      error_message = "kafka_sasl_password_ssm_parameter needs kafka_sasl_mechanism and kafka_sasl_username."
    }
  }
}

resource "aws_autoscaling_group" "workers" {
  # No load balancer: workers pull from Kafka. Health is EC2 status plus the container's restart
  # policy; /readyz and /metrics are for monitoring.
  name                      = local.asg_name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = var.instance_warmup_seconds
  default_instance_warmup   = var.instance_warmup_seconds
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]
  metrics_granularity       = "1Minute"
  # GroupInServiceInstances feeds the lag-per-instance scaling metric.
  enabled_metrics = [
    "GroupDesiredCapacity", "GroupInServiceInstances", "GroupMaxSize", "GroupMinSize",
    "GroupPendingInstances", "GroupTerminatingInstances", "GroupTotalInstances",
  ]

  launch_template {
    id      = aws_launch_template.workers.id
    version = aws_launch_template.workers.latest_version
  }

  # A new launch template version (image, AMI, settings) replaces the fleet gradually.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = var.instance_refresh_min_healthy_percentage
      instance_warmup        = tostring(var.instance_warmup_seconds)
      skip_matching          = true
    }
  }

  # Scale-in and refresh wait here while the instance drains its worker (see the user data).
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

  lifecycle {
    # The scaling policy owns the desired count after creation.
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
