# The images bucket, when this module creates it: private, encrypted by default, versioned,
# owner-enforced, TLS-only. With existing_bucket_name none of this is created and the role is
# scoped to that bucket instead.

resource "aws_s3_bucket" "images" {
  count = local.create_bucket ? 1 : 0

  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice for the owner of the uploads, not of the workers; uploads can be re-sent by the upload services.
  #checkov:skip=CKV2_AWS_62:The workers are driven by Kafka events that the upload services publish, not by S3 event notifications.
  #checkov:skip=CKV_AWS_18:Server access logging is optional (bucket_access_log_bucket): it needs a separate log bucket that this module does not own.
  bucket        = var.create_bucket_name
  force_destroy = var.bucket_force_destroy
  tags          = local.common_tags
}

resource "aws_s3_bucket_public_access_block" "images" {
  count = local.create_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.images[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "images" {
  count = local.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.images[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "images" {
  count = local.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.images[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.bucket_sse_algorithm
      kms_master_key_id = var.bucket_sse_algorithm == "aws:kms" ? var.bucket_kms_key_arn : null
    }
    bucket_key_enabled = var.bucket_sse_algorithm == "aws:kms"
  }

  lifecycle {
    precondition {
      condition     = var.bucket_kms_key_arn == null || var.bucket_sse_algorithm == "aws:kms"
      error_message = "bucket_kms_key_arn is only used with bucket_sse_algorithm = \"aws:kms\"."
    }
  }
}

resource "aws_s3_bucket_versioning" "images" {
  count = local.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.images[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "images" {
  count = local.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.images[0].id

  rule {
    id     = "expire-old-versions-and-abandoned-uploads"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.bucket_noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.images]
}

resource "aws_s3_bucket_logging" "images" {
  count = local.create_bucket && var.bucket_access_log_bucket != null ? 1 : 0

  bucket        = aws_s3_bucket.images[0].id
  target_bucket = var.bucket_access_log_bucket
  target_prefix = "s3-access/${var.create_bucket_name}/"
}

data "aws_iam_policy_document" "images_bucket" {
  count = local.create_bucket ? 1 : 0

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "images" {
  count = local.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.images[0].id
  policy = data.aws_iam_policy_document.images_bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.images]
}
