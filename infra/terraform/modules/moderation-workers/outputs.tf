output "autoscaling_group_name" {
  description = "Name of the workers' Auto Scaling group."
  value       = aws_autoscaling_group.workers.name
}

output "autoscaling_group_arn" {
  description = "ARN of the workers' Auto Scaling group."
  value       = aws_autoscaling_group.workers.arn
}

output "launch_template_id" {
  description = "ID of the workers' launch template."
  value       = aws_launch_template.workers.id
}

output "launch_template_latest_version" {
  description = "Latest launch template version (the one the ASG runs; a change triggers an instance refresh)."
  value       = aws_launch_template.workers.latest_version
}

output "ami_id" {
  description = "AMI the launch template uses."
  value       = local.ami_id
}

output "security_group_id" {
  description = "Security group of the workers (reference it from Kafka brokers' or VPC endpoints' rules)."
  value       = aws_security_group.workers.id
}

output "instance_role_arn" {
  description = "ARN of the workers' instance role."
  value       = aws_iam_role.workers.arn
}

output "instance_role_name" {
  description = "Name of the workers' instance role."
  value       = aws_iam_role.workers.name
}

output "instance_profile_arn" {
  description = "ARN of the workers' instance profile."
  value       = aws_iam_instance_profile.workers.arn
}

output "bucket_name" {
  description = "Images bucket (created or existing)."
  value       = local.create_bucket ? aws_s3_bucket.images[0].bucket : local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the images bucket."
  value       = local.create_bucket ? aws_s3_bucket.images[0].arn : local.bucket_arn
}

output "kafka_bootstrap_servers" {
  description = "Bootstrap servers the workers use (the created MSK cluster's IAM brokers, port 9098, or the given ones)."
  value       = local.bootstrap_servers
}

output "kafka_security_protocol" {
  description = "MODERATION_KAFKA_SECURITY_PROTOCOL given to the workers (null: the worker's default)."
  value       = local.security_protocol
}

output "msk_cluster_arn" {
  description = "ARN of the created MSK cluster, or null."
  value       = var.create_msk_cluster ? aws_msk_cluster.this[0].arn : null
}

output "kafka_topic_arns" {
  description = "MSK IAM resource ARNs of the four topics on the created cluster, by topic name (grant other clients kafka-cluster:* on them); {} without a created cluster."
  value       = local.msk_topic_arns
}

output "kafka_consumer_group_arn" {
  description = "MSK IAM resource ARN of the workers' consumer group on the created cluster, or null."
  value       = var.create_msk_cluster ? local.msk_group_arn : null
}

output "msk_security_group_id" {
  description = "Security group of the created MSK brokers, or null (add rules for more clients to it)."
  value       = var.create_msk_cluster ? aws_security_group.msk[0].id : null
}

output "log_group_name" {
  description = "CloudWatch log group of the workers: per instance, stream <instance id> (the worker units' journal, the container included) and <instance id>/boot (first-boot log)."
  value       = aws_cloudwatch_log_group.workers.name
}

output "metrics_log_group_name" {
  description = "CloudWatch log group receiving the agent's /metrics scrapes as embedded metric format (namespace metrics_namespace)."
  value       = aws_cloudwatch_log_group.metrics.name
}

output "scaling_policy_arn" {
  description = "ARN of the lag target-tracking policy."
  value       = aws_autoscaling_policy.lag_target_tracking.arn
}

output "start_from_zero_policy_arn" {
  description = "ARN of the step policy that starts one worker when there is lag at zero capacity."
  value       = aws_autoscaling_policy.start_from_zero.arn
}

output "lag_alarm_arn" {
  description = "ARN of the consumer-lag alarm."
  value       = aws_cloudwatch_metric_alarm.lag_high.arn
}

output "dlq_alarm_arn" {
  description = "ARN of the dead-letter-rate alarm."
  value       = aws_cloudwatch_metric_alarm.dlq_rate.arn
}

output "alarm_arns" {
  description = "All alarm ARNs by purpose (consumer_time_lag is null without MSK metrics; lag_while_empty drives the start-from-zero policy)."
  value = {
    consumer_lag      = aws_cloudwatch_metric_alarm.lag_high.arn
    consumer_time_lag = one(aws_cloudwatch_metric_alarm.time_lag_high[*].arn)
    dlq_rate          = aws_cloudwatch_metric_alarm.dlq_rate.arn
    results_heartbeat = aws_cloudwatch_metric_alarm.results_heartbeat.arn
    lag_while_empty   = aws_cloudwatch_metric_alarm.lag_while_empty.arn
  }
}
