output "autoscaling_group_name" {
  description = "Workers' Auto Scaling group."
  value       = module.moderation_workers.autoscaling_group_name
}

output "kafka_bootstrap_servers" {
  description = "IAM bootstrap brokers of the created MSK cluster (SASL_SSL, AWS_MSK_IAM; give them to the upload services too)."
  value       = module.moderation_workers.kafka_bootstrap_servers
}

output "kafka_topic_arns" {
  description = "MSK IAM ARNs of the four topics, for the policies of the other Kafka clients."
  value       = module.moderation_workers.kafka_topic_arns
}

output "images_bucket" {
  description = "Bucket the upload services write images to."
  value       = module.moderation_workers.bucket_name
}

output "alarm_arns" {
  description = "Consumer-lag, time-lag, DLQ, results-heartbeat and start-from-zero alarms."
  value       = module.moderation_workers.alarm_arns
}
