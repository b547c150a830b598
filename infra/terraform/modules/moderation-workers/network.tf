# Workers accept nothing inbound except the health/metrics port from inside the VPC.

resource "aws_security_group" "workers" {
  name_prefix = "${var.name}-workers-"
  description = "Moderation workers: health/metrics port from the VPC only; egress to Kafka, S3, registry."
  vpc_id      = var.vpc_id
  tags        = merge(local.common_tags, { Name = "${var.name}-workers" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "health" {
  for_each = toset(var.metrics_ingress_cidr_blocks)

  security_group_id = aws_security_group.workers.id
  description       = "Worker /livez, /readyz, /metrics from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = var.health_port
  to_port           = var.health_port
  cidr_ipv4         = each.value
  tags              = local.common_tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  #checkov:skip=CKV_AWS_382:Egress stays open by design: workers reach Kafka brokers on whatever host:port an existing cluster advertises, plus S3, ECR, CloudWatch and the Hugging Face hub, none of which have addresses known here.
  security_group_id = aws_security_group.workers.id
  description       = "Kafka, S3, container registry, CloudWatch Logs, Hugging Face hub"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.common_tags
}
