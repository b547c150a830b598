# Optional MSK cluster: three brokers in three AZs, TLS between clients and brokers and between
# brokers, encrypted at rest, private to the VPC. Clients authenticate with IAM (SASL/AWS_MSK_IAM
# on port 9098, no unauthenticated access); the worker role's kafka-cluster permissions (iam.tf)
# act as the ACLs. Its security group admits the workers and msk_client_cidr_blocks on 9098.

resource "aws_security_group" "msk" {
  count = var.create_msk_cluster ? 1 : 0

  name_prefix = "${var.name}-msk-"
  description = "MSK brokers of ${var.name}: IAM over TLS 9098 from the workers and listed clients."
  vpc_id      = var.vpc_id
  tags        = merge(local.common_tags, { Name = "${var.name}-msk" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_workers" {
  count = var.create_msk_cluster ? 1 : 0

  security_group_id            = aws_security_group.msk[0].id
  description                  = "Kafka IAM/TLS from the moderation workers"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.workers.id
  tags                         = local.common_tags
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_clients" {
  for_each = var.create_msk_cluster ? toset(var.msk_client_cidr_blocks) : toset([])

  security_group_id = aws_security_group.msk[0].id
  description       = "Kafka IAM/TLS from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 9098
  to_port           = 9098
  cidr_ipv4         = each.value
  tags              = local.common_tags
}

resource "aws_cloudwatch_log_group" "msk" {
  count = var.create_msk_cluster ? 1 : 0

  #checkov:skip=CKV_AWS_338:Broker logs are operational; retention is a variable (log_retention_days).
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (log_kms_key_arn).
  name              = "/moderation-worker/${var.name}/msk"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.common_tags
}

resource "aws_msk_configuration" "this" {
  count = var.create_msk_cluster ? 1 : 0

  name           = "${var.name}-kafka"
  kafka_versions = [var.msk_kafka_version]
  description    = "Moderation topics: no auto-created topics, replicated writes, long-lived group offsets."

  # RF 3 with min ISR 2: a rolling patch takes one broker down at a time and acks=all writes keep
  # going. Group offsets are kept msk_offsets_retention_minutes (default 30 days) so an idle group
  # (min_size = 0) keeps its position and its lag metric.
  server_properties = <<-EOT
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    unclean.leader.election.enable=false
    offsets.retention.minutes=${var.msk_offsets_retention_minutes}
  EOT
}

resource "aws_msk_cluster" "this" {
  count = var.create_msk_cluster ? 1 : 0

  cluster_name           = var.name
  kafka_version          = var.msk_kafka_version
  number_of_broker_nodes = local.msk_broker_count
  enhanced_monitoring    = var.msk_enhanced_monitoring

  broker_node_group_info {
    instance_type   = var.msk_broker_instance_type
    client_subnets  = local.msk_subnet_ids
    security_groups = [aws_security_group.msk[0].id]

    storage_info {
      ebs_storage_info {
        volume_size = var.msk_broker_volume_size_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.msk_kms_key_arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      iam = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }

  tags = local.common_tags

  lifecycle {
    precondition {
      condition     = length(local.msk_subnet_ids) == 3
      error_message = "A created MSK cluster needs exactly 3 client subnets in distinct AZs (msk_subnet_ids, or subnet_ids): replication factor 3 with min.insync.replicas 2 survives MSK's rolling patches."
    }
  }
}
