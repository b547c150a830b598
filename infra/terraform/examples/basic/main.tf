# A complete fleet in an existing VPC: the images bucket and a three-broker MSK cluster (IAM auth,
# topics created at boot) are created, the weights come from S3 at a pinned revision, workers run
# one on-demand and spot above it, scale on the consumer group's lag, and alarms notify an SNS
# topic.
#
#   cp terraform.tfvars.example terraform.tfvars   # fill in the VPC, subnets, image
#   terraform init && terraform plan

terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      service     = "moderation-worker"
      environment = var.environment
    }
  }
}

module "moderation_workers" {
  source = "../../modules/moderation-workers"

  name                        = "moderation-${var.environment}"
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.private_subnet_ids
  metrics_ingress_cidr_blocks = [var.vpc_cidr]

  container_image = var.worker_image
  model_id        = "zai-org/GLM-4.6V-Flash"
  model_revision  = var.model_revision
  # Recommended: the weights copied once to S3 (s3://<bucket>/<model>/<revision>/), synced to
  # instance storage at boot. null falls back to downloading from the Hub on every new instance.
  weights_s3_uri = var.weights_s3_uri
  worker_environment = {
    MODERATION_BATCH_SIZE = "16"
    MODERATION_LOG_LEVEL  = "INFO"
  }

  create_bucket_name = var.images_bucket_name
  images_prefix      = "uploads/"

  create_msk_cluster     = true
  msk_client_cidr_blocks = [var.vpc_cidr]
  lag_metric_source      = "msk"

  min_size                = 1
  max_size                = 6
  on_demand_base_capacity = 1
  instance_types          = ["g5.xlarge"]
  kafka_topic_partitions  = 12
  target_lag_per_instance = 200
  lag_alarm_threshold     = 5000
  alarm_sns_topic_arn     = var.alarm_sns_topic_arn
}
