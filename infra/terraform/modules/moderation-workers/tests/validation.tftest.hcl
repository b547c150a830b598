# Bad inputs are refused at plan time: variable validations (one variable) and preconditions
# (rules between variables). Every run plans a valid baseline with one thing broken.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  vpc_id                      = "vpc-0123456789abcdef0"
  subnet_ids                  = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
  metrics_ingress_cidr_blocks = ["10.20.0.0/16"]
  container_image             = "123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2"
  create_bucket_name          = "acme-moderation-images"
  kafka_bootstrap_servers     = "kafka-1.internal:9092"
  lag_metric_source           = "custom"
  model_revision              = "0123456789abcdef0123456789abcdef01234567"
}

run "baseline_is_valid" {
  command = plan
}

# --- Compute -----------------------------------------------------------------------------------

run "rejects_non_gpu_instance_type" {
  command = plan

  variables {
    instance_type = "m5.xlarge"
  }

  expect_failures = [var.instance_type]
}

run "rejects_arm_gpu_instance_type" {
  command = plan

  variables {
    instance_type = "g5g.xlarge"
  }

  expect_failures = [var.instance_type]
}

run "accepts_single_gpu_instance_type" {
  command = plan

  variables {
    instance_type  = "g6.xlarge"
    instance_types = ["g5.16xlarge", "g6e.2xlarge", "g4dn.xlarge", "gr6.4xlarge"]
  }
}

run "rejects_multi_gpu_instance_type" {
  command = plan

  variables {
    instance_type = "g6.12xlarge"
  }

  expect_failures = [var.instance_type]
}

run "rejects_p_instance_type" {
  command = plan

  variables {
    instance_type = "p5.48xlarge"
  }

  expect_failures = [var.instance_type]
}

run "rejects_multi_gpu_in_instance_types" {
  command = plan

  variables {
    instance_types = ["g5.xlarge", "g5.48xlarge"]
  }

  expect_failures = [var.instance_types]
}

run "rejects_spot_drain_beyond_the_notice" {
  command = plan

  variables {
    spot_drain_seconds = 120
  }

  expect_failures = [var.spot_drain_seconds]
}

run "rejects_spot_percentage_above_100" {
  command = plan

  variables {
    spot_percentage_above_base = 150
  }

  expect_failures = [var.spot_percentage_above_base]
}

run "rejects_launch_timeout_beyond_hook_limit" {
  command = plan

  variables {
    launch_timeout_seconds = 9000
  }

  expect_failures = [var.launch_timeout_seconds]
}

run "rejects_zero_watchdog_threshold" {
  command = plan

  variables {
    watchdog_failure_threshold = 0
  }

  expect_failures = [var.watchdog_failure_threshold]
}

run "rejects_root_volume_smaller_than_ami" {
  command = plan

  variables {
    root_volume_size_gb = 50
  }

  expect_failures = [var.root_volume_size_gb]
}

run "rejects_latest_tag" {
  command = plan

  variables {
    container_image = "ghcr.io/acme/moderation-worker:latest"
  }

  expect_failures = [var.container_image]
}

run "rejects_untagged_image" {
  command = plan

  variables {
    container_image = "ghcr.io/acme/moderation-worker"
  }

  expect_failures = [var.container_image]
}

# --- Model and weights -------------------------------------------------------------------------

run "rejects_branch_as_model_revision" {
  command = plan

  variables {
    model_revision = "main"
  }

  expect_failures = [var.model_revision]
}

run "rejects_short_sha_as_model_revision" {
  command = plan

  variables {
    model_revision = "0123456"
  }

  expect_failures = [var.model_revision]
}

run "rejects_weights_uri_without_prefix" {
  command = plan

  variables {
    weights_s3_uri = "s3://acme-models"
  }

  expect_failures = [var.weights_s3_uri]
}

run "rejects_s3_weights_without_uri" {
  command = plan

  variables {
    model_weights_source = "s3"
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_weights_uri_with_hub_source" {
  command = plan

  variables {
    model_weights_source = "hub"
    weights_s3_uri       = "s3://acme-models/glm/0123456789abcdef0123456789abcdef01234567/"
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_malformed_hf_token_parameter" {
  command = plan

  variables {
    hf_token_ssm_parameter = "moderation hf token"
  }

  expect_failures = [var.hf_token_ssm_parameter]
}

# --- Capacity ----------------------------------------------------------------------------------

run "rejects_min_above_max" {
  command = plan

  variables {
    min_size = 5
    max_size = 2
  }

  expect_failures = [aws_autoscaling_group.workers]
}

run "rejects_desired_above_max" {
  command = plan

  variables {
    desired_capacity = 10
  }

  expect_failures = [aws_autoscaling_group.workers]
}

run "rejects_negative_min" {
  command = plan

  variables {
    min_size = -1
  }

  expect_failures = [var.min_size]
}

run "rejects_fractional_max" {
  command = plan

  variables {
    max_size = 2.5
  }

  expect_failures = [var.max_size]
}

# --- Network -----------------------------------------------------------------------------------

run "rejects_public_metrics_ingress" {
  command = plan

  variables {
    metrics_ingress_cidr_blocks = ["0.0.0.0/0"]
  }

  expect_failures = [var.metrics_ingress_cidr_blocks]
}

run "rejects_empty_subnets" {
  command = plan

  variables {
    subnet_ids = []
  }

  expect_failures = [var.subnet_ids]
}

# --- Bucket ------------------------------------------------------------------------------------

run "rejects_uppercase_bucket_name" {
  command = plan

  variables {
    create_bucket_name = "Acme_Images"
  }

  expect_failures = [var.create_bucket_name]
}

run "rejects_ip_like_bucket_name" {
  command = plan

  variables {
    create_bucket_name = "192.168.10.20"
  }

  expect_failures = [var.create_bucket_name]
}

run "rejects_bucket_name_with_double_dot" {
  command = plan

  variables {
    create_bucket_name = "acme..images"
  }

  expect_failures = [var.create_bucket_name]
}

run "rejects_too_short_existing_bucket_name" {
  command = plan

  variables {
    create_bucket_name   = null
    existing_bucket_name = "ab"
  }

  expect_failures = [var.existing_bucket_name]
}

run "rejects_both_bucket_options" {
  command = plan

  variables {
    existing_bucket_name = "acme-uploads"
  }

  expect_failures = [aws_iam_role_policy.workers]
}

run "rejects_neither_bucket_option" {
  command = plan

  variables {
    create_bucket_name = null
  }

  expect_failures = [aws_iam_role_policy.workers]
}

run "rejects_prefix_with_leading_slash" {
  command = plan

  variables {
    images_prefix = "/uploads/"
  }

  expect_failures = [var.images_prefix]
}

run "rejects_prefix_without_trailing_slash" {
  command = plan

  variables {
    images_prefix = "uploads"
  }

  expect_failures = [var.images_prefix]
}

run "rejects_kms_key_with_sse_s3" {
  command = plan

  variables {
    bucket_sse_algorithm = "AES256"
    bucket_kms_key_arn   = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  }

  expect_failures = [aws_s3_bucket_server_side_encryption_configuration.images]
}

# --- Kafka -------------------------------------------------------------------------------------

run "rejects_empty_bootstrap_servers_without_msk" {
  command = plan

  variables {
    kafka_bootstrap_servers = ""
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_bootstrap_servers_with_msk" {
  command = plan

  variables {
    create_msk_cluster = true
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_malformed_bootstrap_servers" {
  command = plan

  variables {
    kafka_bootstrap_servers = "kafka-1.internal:9092, kafka-2.internal:9092"
  }

  expect_failures = [var.kafka_bootstrap_servers]
}

run "rejects_sasl_settings_with_created_msk" {
  command = plan

  variables {
    kafka_bootstrap_servers = ""
    create_msk_cluster      = true
    kafka_sasl_mechanism    = "SCRAM-SHA-512"
    kafka_sasl_username     = "moderation-worker"
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_fewer_partitions_than_workers" {
  command = plan

  variables {
    kafka_bootstrap_servers = ""
    create_msk_cluster      = true
    max_size                = 16
    kafka_topic_partitions  = 8
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_msk_broker_count_not_multiple_of_three" {
  command = plan

  variables {
    msk_broker_count = 4
  }

  expect_failures = [var.msk_broker_count]
}

run "rejects_plaintext_to_created_msk" {
  command = plan

  variables {
    kafka_bootstrap_servers = ""
    create_msk_cluster      = true
    kafka_security_protocol = "PLAINTEXT"
  }

  expect_failures = [aws_launch_template.workers]
}

run "rejects_msk_in_two_subnets" {
  command = plan

  variables {
    kafka_bootstrap_servers = ""
    create_msk_cluster      = true
    subnet_ids              = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  }

  expect_failures = [aws_msk_cluster.this]
}

run "rejects_msk_metrics_without_msk" {
  command = plan

  variables {
    lag_metric_source = "msk"
  }

  expect_failures = [aws_autoscaling_policy.lag_target_tracking]
}

run "rejects_group_id_with_colon" {
  command = plan

  variables {
    group_id = "moderation:worker"
  }

  expect_failures = [var.group_id]
}

# --- Worker environment ------------------------------------------------------------------------

run "rejects_secret_in_worker_environment" {
  command = plan

  variables {
    worker_environment = { MODERATION_KAFKA_SASL_PASSWORD = "hunter2" }
  }

  expect_failures = [var.worker_environment]
}

run "rejects_managed_setting_in_worker_environment" {
  command = plan

  variables {
    worker_environment = { MODERATION_KAFKA_BOOTSTRAP_SERVERS = "elsewhere:9092" }
  }

  expect_failures = [var.worker_environment]
}

run "rejects_multiline_worker_environment_value" {
  command = plan

  variables {
    worker_environment = { MODERATION_LOG_LEVEL = "INFO\nrm -rf /" }
  }

  expect_failures = [var.worker_environment]
}

run "rejects_sasl_password_without_mechanism" {
  command = plan

  variables {
    kafka_sasl_password_ssm_parameter = "/moderation/kafka-password"
  }

  expect_failures = [aws_launch_template.workers]
}
