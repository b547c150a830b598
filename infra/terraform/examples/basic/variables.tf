variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment name, used in resource names."
  type        = string
  default     = "prod"
}

variable "vpc_id" {
  description = "Existing VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC (metrics scraping and Kafka clients)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Three private subnets in distinct AZs (the MSK brokers need three), with a NAT gateway or VPC endpoints."
  type        = list(string)
}

variable "worker_image" {
  description = "Worker image pinned by tag or digest, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.0.0."
  type        = string
}

variable "model_revision" {
  description = "Hub commit (40 hex digits) of the model whose weights the workers load."
  type        = string
}

variable "weights_s3_uri" {
  description = "S3 folder with the weights at model_revision, e.g. s3://acme-models/zai-org/GLM-4.6V-Flash/<revision>/; null downloads from the Hub."
  type        = string
  default     = null
}

variable "images_bucket_name" {
  description = "Globally unique name of the images bucket to create."
  type        = string
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic for alarm notifications (optional)."
  type        = string
  default     = null
}
