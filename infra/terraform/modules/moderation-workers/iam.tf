# Instance role: read the images (bucket or prefix) and the weights prefix, pull the one worker
# image, write the worker's logs and metrics, complete its hooks / report health within its own
# Auto Scaling group, use its own topics and group on a created MSK cluster - and nothing else
# unless an option asks for it. Nothing here refers to the Auto Scaling group resource: the policy
# is complete before the group launches anything (the group depends_on it).

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    sid     = "Ec2AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "workers" {
  name                 = "${var.name}-instance"
  description          = "Moderation workers (${var.name}): read images, pull the worker image, write logs."
  assume_role_policy   = data.aws_iam_policy_document.assume_ec2.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = local.common_tags
}

data "aws_iam_policy_document" "workers" {
  statement {
    sid       = "ReadImages"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = [local.images_objects_arn]
  }

  # ListBucket makes a missing key a 404 (NoSuchKey, a terminal error for the worker) instead of a
  # 403; with a prefix it is limited to listing under that prefix.
  statement {
    sid       = "ListImagesPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    dynamic "condition" {
      for_each = var.images_prefix == "" ? [] : [var.images_prefix]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.bucket_kms_key_arn == null ? [] : [var.bucket_kms_key_arn]
    content {
      sid       = "DecryptImagesThroughS3"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.images_region}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.is_ecr ? ["ecr"] : []
    content {
      # GetAuthorizationToken has no resource-level permissions: "*" is the only valid resource.
      sid       = "EcrLogin"
      effect    = "Allow"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.is_ecr ? [local.ecr_repository_arn] : []
    content {
      sid       = "PullWorkerImage"
      effect    = "Allow"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.weights_s3 ? ["${local.weights_bucket}/${local.weights_prefix}"] : []
    content {
      sid       = "ReadWeights"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = ["arn:${local.partition}:s3:::${statement.value}*"]
    }
  }

  # aws s3 sync lists the prefix; nothing else in that bucket.
  dynamic "statement" {
    for_each = local.weights_s3 ? [local.weights_prefix] : []
    content {
      sid       = "ListWeightsPrefix"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${local.partition}:s3:::${local.weights_bucket}"]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${statement.value}*"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.weights_s3 && var.weights_kms_key_arn != null ? [var.weights_kms_key_arn] : []
    content {
      sid       = "DecryptWeightsThroughS3"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["s3.*.amazonaws.com"]
      }
    }
  }

  # The CloudWatch agent ships the boot log and the worker units' journal (worker log group) and
  # /metrics as EMF events (metrics log group).
  statement {
    sid     = "WriteWorkerLogs"
    effect  = "Allow"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = flatten([for g in [aws_cloudwatch_log_group.workers.name, aws_cloudwatch_log_group.metrics.name] : [
      "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${g}",
      "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${g}:log-stream:*",
    ]])
  }

  # nvidia_gpu metrics from the agent. PutMetricData has no resource-level permissions; the
  # namespace condition scopes it.
  statement {
    sid       = "PublishAgentMetrics"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }
  }

  # Its own group only (an ARN built from the name): complete the launch and drain hooks, mark
  # itself Unhealthy (watchdog, failed boot).
  statement {
    sid       = "OwnLifecycle"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth"]
    resources = [local.asg_arn]
  }

  dynamic "statement" {
    for_each = var.allow_custom_metric_publishing ? [var.custom_metric_namespace] : []
    content {
      # PutMetricData has no resource-level permissions; the namespace condition scopes it.
      sid       = "PublishLagMetrics"
      effect    = "Allow"
      actions   = ["cloudwatch:PutMetricData"]
      resources = ["*"]

      condition {
        test     = "StringEquals"
        variable = "cloudwatch:namespace"
        values   = [statement.value]
      }
    }
  }

  dynamic "statement" {
    for_each = var.kafka_sasl_password_ssm_parameter == null ? [] : [var.kafka_sasl_password_ssm_parameter]
    content {
      sid       = "ReadKafkaPassword"
      effect    = "Allow"
      actions   = ["ssm:GetParameter"]
      resources = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(statement.value, "/")}"]
    }
  }

  dynamic "statement" {
    for_each = var.hf_token_ssm_parameter == null ? [] : [var.hf_token_ssm_parameter]
    content {
      sid       = "ReadHubToken"
      effect    = "Allow"
      actions   = ["ssm:GetParameter"]
      resources = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(statement.value, "/")}"]
    }
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn != null && (var.kafka_sasl_password_ssm_parameter != null || var.hf_token_ssm_parameter != null) ? [var.secrets_kms_key_arn] : []
    content {
      sid       = "DecryptSecretsThroughSsm"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
    }
  }

  # MSK IAM access control, as narrow as Kafka ACLs: connect (idempotent producer included), read
  # the requests topic, write the three output topics, use its own consumer group.
  dynamic "statement" {
    for_each = var.create_msk_cluster ? [local.msk_arn] : []
    content {
      sid       = "KafkaConnect"
      effect    = "Allow"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.create_msk_cluster ? [local.msk_topic_arns[var.input_topic]] : []
    content {
      sid       = "KafkaReadRequests"
      effect    = "Allow"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.create_msk_cluster ? [[for t in [var.results_topic, var.dlq_topic, var.review_topic] : local.msk_topic_arns[t]]] : []
    content {
      sid       = "KafkaWriteOutputs"
      effect    = "Allow"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
      resources = statement.value
    }
  }

  dynamic "statement" {
    for_each = var.create_msk_cluster ? [local.msk_group_arn] : []
    content {
      sid       = "KafkaConsumerGroup"
      effect    = "Allow"
      actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
      resources = [statement.value]
    }
  }

  # `topics ensure` at boot: create the four topics when missing, nothing else.
  dynamic "statement" {
    for_each = var.create_msk_cluster ? [values(local.msk_topic_arns)] : []
    content {
      sid       = "KafkaCreateTopics"
      effect    = "Allow"
      actions   = ["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic", "kafka-cluster:DescribeTopicDynamicConfiguration"]
      resources = statement.value
    }
  }
}

resource "aws_iam_role_policy" "workers" {
  name   = "moderation-worker"
  role   = aws_iam_role.workers.id
  policy = data.aws_iam_policy_document.workers.json

  lifecycle {
    precondition {
      condition     = local.bucket_choice_ok
      error_message = "Set exactly one of create_bucket_name (create the images bucket) and existing_bucket_name (use an existing one)."
    }
  }
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  count = var.enable_ssm_session_manager ? 1 : 0

  role       = aws_iam_role.workers.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "workers" {
  name = "${var.name}-instance"
  role = aws_iam_role.workers.name
  tags = local.common_tags
}
