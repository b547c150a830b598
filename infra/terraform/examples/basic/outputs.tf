output "autoscaling_group_name" {
  description = "Workers' Auto Scaling group."
  value       = module.moderation_workers.autoscaling_group_name
}

output "kafka_bootstrap_servers" {
  description = "TLS bootstrap brokers of the created MSK cluster (give them to the upload services too)."
  value       = module.moderation_workers.kafka_bootstrap_servers
}

output "images_bucket" {
  description = "Bucket the upload services write images to."
  value       = module.moderation_workers.bucket_name
}

output "alarm_arns" {
  description = "Consumer-lag and DLQ alarms."
  value       = module.moderation_workers.alarm_arns
}
