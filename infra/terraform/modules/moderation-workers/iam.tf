# Instance role: read the images (bucket or prefix), pull the one worker image, write the worker's
# logs, drain / report health within its own Auto Scaling group - and nothing else unless an
# option asks for it.

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

  statement {
    sid       = "WriteWorkerLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.workers.arn, "${aws_cloudwatch_log_group.workers.arn}:log-stream:*"]
  }

  # Its own group only: finish the drain hook; report a failed bootstrap so the instance is replaced.
  statement {
    sid       = "OwnLifecycle"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth"]
    resources = [aws_autoscaling_group.workers.arn]
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
      resources = ["arn:${local.partition}:ssm:${local.region}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(statement.value, "/")}"]
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
