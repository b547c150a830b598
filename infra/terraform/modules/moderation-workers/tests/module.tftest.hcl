# What the module builds, checked offline against a mocked AWS provider (terraform test, >= 1.7).

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  vpc_id                      = "vpc-0123456789abcdef0"
  subnet_ids                  = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
  metrics_ingress_cidr_blocks = ["10.20.0.0/16"]
  container_image             = "123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2"
  create_bucket_name          = "acme-moderation-images"
  create_msk_cluster          = true
  model_revision              = "0123456789abcdef0123456789abcdef01234567"
  weights_s3_uri              = "s3://acme-models/zai-org/GLM-4.6V-Flash/0123456789abcdef0123456789abcdef01234567/"
}

# --- Defaults: created bucket, created MSK, ECR image, S3 weights -----------------------------------

run "launch_template_is_hardened_gpu" {
  command = apply

  assert {
    condition     = aws_launch_template.workers.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required."
  }

  assert {
    condition     = aws_launch_template.workers.metadata_options[0].http_put_response_hop_limit == 2
    error_message = "The hop limit must be 2 so the container reaches IMDSv2."
  }

  assert {
    condition     = aws_launch_template.workers.metadata_options[0].http_endpoint == "enabled"
    error_message = "IMDS must stay enabled (the awslogs driver and the container need role credentials)."
  }

  assert {
    condition     = aws_launch_template.workers.image_id == "ami-0123456789abcdef0"
    error_message = "The AMI must come from the SSM parameter."
  }

  assert {
    condition     = data.aws_ssm_parameter.ami[0].name == "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
    error_message = "The default AMI parameter must be the Deep Learning Base OSS Nvidia Driver GPU AMI (AL2023)."
  }

  assert {
    condition     = aws_launch_template.workers.instance_type == "g6.xlarge"
    error_message = "The default instance type must be g6.xlarge."
  }

  assert {
    condition     = aws_launch_template.workers.monitoring[0].enabled == true
    error_message = "Detailed monitoring must be on."
  }

  assert {
    condition = (
      aws_launch_template.workers.block_device_mappings[0].ebs[0].encrypted == "true"
      && aws_launch_template.workers.block_device_mappings[0].ebs[0].volume_type == "gp3"
      && aws_launch_template.workers.block_device_mappings[0].ebs[0].volume_size == 150
    )
    error_message = "The root volume must be an encrypted gp3 volume of root_volume_size_gb."
  }

  assert {
    condition     = aws_launch_template.workers.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "Workers must not get a public IP."
  }
}

run "user_data_runs_worker_on_gpu" {
  command = apply

  assert {
    condition = alltrue([for flag in [
      "/usr/bin/docker run --rm --name moderation-worker --gpus all --stop-timeout 180",
      "--env-file /run/moderation-worker/worker.env",
      "--publish 8080:8080",
      "--log-driver none",
      "'123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2' 'run'\n",
    ] : strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, flag)])
    error_message = "The worker unit must run the image with the GPU, the stop timeout, the tmpfs env file, the health port and the command."
  }

  assert {
    condition = alltrue([for line in [
      "MODERATION_KAFKA_BOOTSTRAP_SERVERS=b-1.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098,b-2.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098,b-3.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098\n",
      "MODERATION_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n",
      "MODERATION_KAFKA_SASL_MECHANISM=AWS_MSK_IAM\n",
      "AWS_DEFAULT_REGION=us-east-1\n",
      "MODERATION_GROUP_ID=moderation-worker\n",
      "MODERATION_INPUT_TOPIC=moderation.requests\n",
      "MODERATION_DLQ_TOPIC=moderation.dlq\n",
      "MODERATION_S3_REGION=us-east-1\n",
      "MODERATION_HEALTH_PORT=8080\n",
    ] : strcontains(module.boot.script, line)])
    error_message = "The env file must carry the worker settings, with the MSK IAM brokers, SASL_SSL + AWS_MSK_IAM and the region for botocore."
  }

  assert {
    condition     = strcontains(module.boot.node_script, "docker login --username AWS --password-stdin '123456789012.dkr.ecr.us-east-1.amazonaws.com'") && strcontains(module.boot.node_script, "retry 5 ecr_login")
    error_message = "An ECR image needs an ECR login (retried) before the pull."
  }

  assert {
    condition     = !strcontains(module.boot.script, "MODERATION_KAFKA_SASL_PASSWORD") && !strcontains(module.boot.script, "HF_TOKEN")
    error_message = "No secrets are read without their parameters."
  }

  assert {
    condition     = strcontains(module.boot.script, "trap '/usr/local/sbin/moderation-worker-node fail") && strcontains(module.boot.node_script, "trap 'cmd_fail \"prepare failed")
    error_message = "A failed first boot or prepare must abandon the launch / mark the instance unhealthy."
  }

  # EC2 limits user data to 16 KB; the script goes gzip-compressed (cloud-init unpacks it).
  assert {
    condition     = aws_launch_template.workers.user_data == module.boot.user_data_base64 && module.boot.user_data_base64 == base64gzip(module.boot.script)
    error_message = "The launch template must carry the gzip-compressed, base64-encoded boot script."
  }

  assert {
    condition     = length(aws_launch_template.workers.user_data) <= 16384
    error_message = "The launch template's user data must stay within 16 KB (base64 of the gzip)."
  }
}

run "asg_rolls_out_template_versions" {
  command = apply

  assert {
    condition = (
      aws_autoscaling_group.workers.mixed_instances_policy[0].launch_template[0].launch_template_specification[0].version == tostring(aws_launch_template.workers.latest_version)
      && aws_autoscaling_group.workers.mixed_instances_policy[0].launch_template[0].launch_template_specification[0].launch_template_id == aws_launch_template.workers.id
    )
    error_message = "The ASG must run the latest launch template version."
  }

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].strategy == "Rolling"
    error_message = "A new template version must roll out through a Rolling instance refresh."
  }

  assert {
    condition = anytrue([for h in aws_autoscaling_group.workers.initial_lifecycle_hook :
      h.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" && h.heartbeat_timeout == 300 && h.default_result == "CONTINUE"
    ])
    error_message = "A termination hook must give the worker stop_timeout + 120 s to drain."
  }

  assert {
    condition     = aws_autoscaling_group.workers.min_size == 1 && aws_autoscaling_group.workers.max_size == 4
    error_message = "Default capacity is 1..4."
  }

  assert {
    condition     = contains(aws_autoscaling_group.workers.enabled_metrics, "GroupInServiceInstances")
    error_message = "GroupInServiceInstances must be collected for the lag-per-instance metric."
  }
}

run "security_group_only_health_port_from_vpc" {
  command = apply

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.health) == 1
    error_message = "Exactly one ingress rule per metrics CIDR."
  }

  assert {
    condition = alltrue([for r in values(aws_vpc_security_group_ingress_rule.health) :
      r.from_port == 8080 && r.to_port == 8080 && r.ip_protocol == "tcp" && r.cidr_ipv4 == "10.20.0.0/16"
    ])
    error_message = "Ingress must be the health port from the VPC CIDR only."
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.all.ip_protocol == "-1"
    error_message = "Egress must stay open (Kafka, S3, registry)."
  }
}

run "instance_policy_is_least_privilege" {
  command = apply

  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.workers.statement : [for a in s.actions : a if startswith(a, "s3:")]])) == toset(["s3:GetObject", "s3:ListBucket"])
    error_message = "The only S3 actions must be GetObject and ListBucket."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "ReadWeights"]) == toset(["arn:aws:s3:::acme-models/zai-org/GLM-4.6V-Flash/0123456789abcdef0123456789abcdef01234567/*"])
    error_message = "The weights read must be GetObject on exactly the weights prefix."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.sid == "ListWeightsPrefix" && s.actions == toset(["s3:ListBucket"]) && s.resources == toset(["arn:aws:s3:::acme-models"])
      && anytrue([for c in s.condition : c.test == "StringLike" && c.variable == "s3:prefix" && toset(c.values) == toset(["zai-org/GLM-4.6V-Flash/0123456789abcdef0123456789abcdef01234567/*"])])
    ])
    error_message = "Listing the weights bucket must be conditioned on the weights prefix."
  }

  assert {
    condition     = alltrue(flatten([for s in data.aws_iam_policy_document.workers.statement : [for a in s.actions : !strcontains(a, "*")]]))
    error_message = "No wildcard actions (s3:*, *)."
  }

  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.workers.statement : s.effect == "Allow"])
    error_message = "The role policy only allows."
  }

  assert {
    condition = alltrue(flatten([for s in data.aws_iam_policy_document.workers.statement : [
      for r in s.resources : r == "arn:aws:s3:::acme-moderation-images" || startswith(r, "arn:aws:s3:::acme-moderation-images/")
    ] if anytrue([for a in s.actions : startswith(a, "s3:")]) && !endswith(s.sid, "Weights") && s.sid != "ListWeightsPrefix"]))
    error_message = "The image S3 statements must name only the images bucket."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "ReadImages"]) == toset(["arn:aws:s3:::acme-moderation-images/*"])
    error_message = "GetObject must be on the bucket's objects."
  }

  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.workers.statement : s.actions if contains(s.resources, "*")])) == toset(["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"])
    error_message = "Only ecr:GetAuthorizationToken and cloudwatch:PutMetricData (no resource-level permissions) may use resource \"*\"."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.actions == toset(["cloudwatch:PutMetricData"]) && anytrue([for c in s.condition : c.variable == "cloudwatch:namespace" && toset(c.values) == toset(["ModerationWorker"])])
    ])
    error_message = "The agent's PutMetricData must be conditioned on metrics_namespace."
  }

  assert {
    condition = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "WriteWorkerLogs"]) == toset([
      "arn:aws:logs:us-east-1:123456789012:log-group:/moderation-worker/moderation-worker",
      "arn:aws:logs:us-east-1:123456789012:log-group:/moderation-worker/moderation-worker:log-stream:*",
      "arn:aws:logs:us-east-1:123456789012:log-group:/moderation-worker/moderation-worker/metrics",
      "arn:aws:logs:us-east-1:123456789012:log-group:/moderation-worker/moderation-worker/metrics:log-stream:*",
    ])
    error_message = "The agent may write to the worker and metrics log groups only."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if contains(s.actions, "ecr:BatchGetImage")]) == toset(["arn:aws:ecr:us-east-1:123456789012:repository/moderation-worker"])
    error_message = "Image pulls must be limited to the worker's ECR repository."
  }

  assert {
    condition = toset(flatten([for s in data.aws_iam_policy_document.workers.statement : s.actions])) == toset([
      "s3:GetObject", "s3:ListBucket", "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams",
      "cloudwatch:PutMetricData", "autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth",
      "kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently", "kafka-cluster:DescribeTopic", "kafka-cluster:ReadData",
      "kafka-cluster:WriteData", "kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup", "kafka-cluster:CreateTopic",
      "kafka-cluster:DescribeTopicDynamicConfiguration",
    ])
    error_message = "The default role may do exactly: read images and weights, pull its image, ship logs and metrics, complete hooks and report health in its ASG, use its topics and group."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if contains(s.actions, "autoscaling:SetInstanceHealth")]) == toset(["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/moderation-worker"])
    error_message = "Lifecycle and health actions must be limited to the workers' own ASG, by an ARN built from its name."
  }

  assert {
    condition     = length(aws_iam_role_policy_attachment.ssm_core) == 0
    error_message = "Session Manager is off by default."
  }
}

run "created_bucket_is_hardened" {
  command = apply

  assert {
    condition = (
      aws_s3_bucket_public_access_block.images[0].block_public_acls
      && aws_s3_bucket_public_access_block.images[0].block_public_policy
      && aws_s3_bucket_public_access_block.images[0].ignore_public_acls
      && aws_s3_bucket_public_access_block.images[0].restrict_public_buckets
    )
    error_message = "All four public access blocks must be on."
  }

  assert {
    condition = (
      one(aws_s3_bucket_server_side_encryption_configuration.images[0].rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms"
      && one(aws_s3_bucket_server_side_encryption_configuration.images[0].rule).bucket_key_enabled
    )
    error_message = "Default encryption must be SSE-KMS with a bucket key."
  }

  assert {
    condition     = aws_s3_bucket_versioning.images[0].versioning_configuration[0].status == "Enabled"
    error_message = "Versioning must be on."
  }

  assert {
    condition     = aws_s3_bucket_ownership_controls.images[0].rule[0].object_ownership == "BucketOwnerEnforced"
    error_message = "ACLs must be disabled (BucketOwnerEnforced)."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.images_bucket[0].statement :
      s.effect == "Deny" && contains(s.actions, "s3:*") && anytrue([for c in s.condition : c.variable == "aws:SecureTransport" && contains(c.values, "false")])
    ])
    error_message = "The bucket policy must deny non-TLS requests."
  }

  assert {
    condition     = aws_s3_bucket_policy.images[0].bucket == aws_s3_bucket.images[0].id
    error_message = "The TLS-only policy must be attached to the images bucket."
  }

  assert {
    condition     = output.bucket_name == "acme-moderation-images"
    error_message = "bucket_name output must be the created bucket."
  }
}

run "msk_cluster_is_encrypted_and_private" {
  command = apply

  assert {
    condition = (
      aws_msk_cluster.this[0].encryption_info[0].encryption_in_transit[0].client_broker == "TLS"
      && aws_msk_cluster.this[0].encryption_info[0].encryption_in_transit[0].in_cluster
    )
    error_message = "MSK must encrypt client-broker and in-cluster traffic."
  }

  assert {
    condition     = toset(aws_msk_cluster.this[0].broker_node_group_info[0].client_subnets) == toset(var.subnet_ids)
    error_message = "The brokers must sit in the given subnets."
  }

  assert {
    condition     = aws_msk_cluster.this[0].broker_node_group_info[0].connectivity_info[0].public_access[0].type == "DISABLED"
    error_message = "No public broker access."
  }

  assert {
    condition     = aws_msk_cluster.this[0].enhanced_monitoring == "PER_TOPIC_PER_BROKER"
    error_message = "Per-topic monitoring is needed for the DLQ alarm."
  }

  assert {
    condition     = aws_msk_cluster.this[0].number_of_broker_nodes == 3 && length(aws_msk_cluster.this[0].broker_node_group_info[0].client_subnets) == 3
    error_message = "Three brokers in three subnets by default."
  }

  assert {
    condition = alltrue([for p in [
      "auto.create.topics.enable=false\n", "default.replication.factor=3\n", "min.insync.replicas=2\n",
      "unclean.leader.election.enable=false\n", "offsets.retention.minutes=43200\n",
    ] : strcontains(aws_msk_configuration.this[0].server_properties, p)])
    error_message = "RF 3, min ISR 2, no auto-created topics, no unclean election, and 30 days of group offsets."
  }

  assert {
    condition = (
      aws_msk_cluster.this[0].client_authentication[0].unauthenticated == false
      && aws_msk_cluster.this[0].client_authentication[0].sasl[0].iam == true
    )
    error_message = "Clients must authenticate with IAM; unauthenticated access must be off."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.msk_from_workers[0].referenced_security_group_id == aws_security_group.workers.id && aws_vpc_security_group_ingress_rule.msk_from_workers[0].from_port == 9098
    error_message = "The workers must reach the brokers' IAM port."
  }

  assert {
    condition     = output.kafka_bootstrap_servers == aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam && output.kafka_security_protocol == "SASL_SSL"
    error_message = "The workers must use the MSK IAM bootstrap brokers over SASL_SSL."
  }
}

run "scales_and_alarms_on_msk_lag" {
  command = apply

  assert {
    condition     = aws_autoscaling_policy.lag_target_tracking.policy_type == "TargetTrackingScaling"
    error_message = "Scaling must be target tracking."
  }

  assert {
    condition     = aws_autoscaling_policy.lag_target_tracking.target_tracking_configuration[0].target_value == 200
    error_message = "Default target is 200 messages of lag per worker."
  }

  assert {
    condition = anytrue([for m in aws_autoscaling_policy.lag_target_tracking.target_tracking_configuration[0].customized_metric_specification[0].metrics :
      m.metric_stat[0].metric[0].namespace == "AWS/Kafka" && m.metric_stat[0].metric[0].metric_name == "SumOffsetLag"
      && toset([for d in m.metric_stat[0].metric[0].dimensions : "${d.name}=${d.value}"]) == toset(["Cluster Name=moderation-worker", "Consumer Group=moderation-worker", "Topic=moderation.requests"])
      if m.id == "lag"
    ])
    error_message = "The lag metric must be MSK SumOffsetLag of the group on the input topic."
  }

  assert {
    condition = anytrue([for m in aws_autoscaling_policy.lag_target_tracking.target_tracking_configuration[0].customized_metric_specification[0].metrics :
      m.return_data == true && m.expression == "lag / IF(workers < 1, 1, workers)"
    ])
    error_message = "The tracked value must be lag per in-service worker."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.lag_high.namespace == "AWS/Kafka"
      && aws_cloudwatch_metric_alarm.lag_high.metric_name == "SumOffsetLag"
      && aws_cloudwatch_metric_alarm.lag_high.threshold == 5000
      && aws_cloudwatch_metric_alarm.lag_high.evaluation_periods == 15
      && aws_cloudwatch_metric_alarm.lag_high.comparison_operator == "GreaterThanThreshold"
    )
    error_message = "The lag alarm must fire above 5000 messages for 15 minutes."
  }

  assert {
    condition = anytrue([for q in aws_cloudwatch_metric_alarm.dlq_rate.metric_query :
      strcontains(q.expression, "SUM(MessagesInPerSec)") && strcontains(q.expression, "Topic = 'moderation.dlq'") && strcontains(q.expression, "\"Cluster Name\" = 'moderation-worker'") && q.period == 60
    ])
    error_message = "The DLQ alarm must sum MSK MessagesInPerSec of the DLQ topic over the brokers."
  }

  assert {
    condition     = abs(aws_cloudwatch_metric_alarm.dlq_rate.threshold - 5 / 60) < 0.000001 && aws_cloudwatch_metric_alarm.dlq_rate.evaluation_periods == 5
    error_message = "5 messages/minute is 5/60 messages/second on MSK's per-second metric."
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.lag_high.alarm_actions) == 0
    error_message = "No alarm actions without an SNS topic."
  }

  assert {
    condition = (
      output.alarm_arns.consumer_lag == aws_cloudwatch_metric_alarm.lag_high.arn && output.alarm_arns.dlq_rate == aws_cloudwatch_metric_alarm.dlq_rate.arn
      && output.alarm_arns.consumer_time_lag == aws_cloudwatch_metric_alarm.time_lag_high[0].arn
      && output.alarm_arns.results_heartbeat == aws_cloudwatch_metric_alarm.results_heartbeat.arn
    )
    error_message = "alarm_arns must list every alarm."
  }
}

# --- Existing bucket with a prefix, existing SASL cluster, custom metrics, non-ECR image ----------

run "existing_bucket_prefix_custom_metrics_sasl" {
  command = apply

  variables {
    create_bucket_name                = null
    existing_bucket_name              = "acme-uploads"
    images_prefix                     = "uploads/"
    images_bucket_region              = "eu-west-1"
    bucket_kms_key_arn                = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    container_image                   = "ghcr.io/acme/moderation-worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    create_msk_cluster                = false
    kafka_bootstrap_servers           = "kafka-1.internal:9096,kafka-2.internal:9096"
    weights_s3_uri                    = null
    hf_token_ssm_parameter            = "/moderation/hf-token"
    secrets_kms_key_arn               = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"
    kafka_security_protocol           = "SASL_SSL"
    kafka_sasl_mechanism              = "SCRAM-SHA-512"
    kafka_sasl_username               = "moderation-worker"
    kafka_sasl_password_ssm_parameter = "/moderation/kafka-password"
    lag_metric_source                 = "custom"
    allow_custom_metric_publishing    = true
    alarm_sns_topic_arn               = "arn:aws:sns:us-east-1:123456789012:moderation-alerts"
    worker_environment                = { MODERATION_BATCH_SIZE = "32" }
  }

  assert {
    condition     = length(aws_s3_bucket.images) == 0 && length(aws_s3_bucket_policy.images) == 0 && length(aws_msk_cluster.this) == 0
    error_message = "Nothing is created for an existing bucket and cluster."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if contains(s.actions, "s3:GetObject")]) == toset(["arn:aws:s3:::acme-uploads/uploads/*"])
    error_message = "GetObject must be limited to the prefix."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      contains(s.actions, "s3:ListBucket") && s.resources == toset(["arn:aws:s3:::acme-uploads"])
      && anytrue([for c in s.condition : c.test == "StringLike" && c.variable == "s3:prefix" && toset(c.values) == toset(["uploads/*"])])
    ])
    error_message = "ListBucket must be conditioned on the prefix."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.actions == toset(["kms:Decrypt"]) && s.resources == toset([var.bucket_kms_key_arn])
      && anytrue([for c in s.condition : c.variable == "kms:ViaService" && toset(c.values) == toset(["s3.eu-west-1.amazonaws.com"])])
    ])
    error_message = "kms:Decrypt only on the bucket key and only through S3 in the bucket's region."
  }

  assert {
    condition     = !anytrue([for s in data.aws_iam_policy_document.workers.statement : anytrue([for a in s.actions : startswith(a, "ecr:") || startswith(a, "kafka-cluster:")])])
    error_message = "A non-ECR image gets no ECR permissions, an existing cluster no MSK IAM permissions."
  }

  assert {
    condition     = length([for s in data.aws_iam_policy_document.workers.statement : s if endswith(s.sid, "Weights") || s.sid == "ListWeightsPrefix"]) == 0
    error_message = "Hub weights need no S3 weights grant."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.sid == "ReadHubToken" && s.actions == toset(["ssm:GetParameter"]) && s.resources == toset(["arn:aws:ssm:us-east-1:123456789012:parameter/moderation/hf-token"])
    ])
    error_message = "The role may read exactly the Hub token parameter."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.actions == toset(["kms:Decrypt"]) && s.resources == toset([var.secrets_kms_key_arn])
      && anytrue([for c in s.condition : c.variable == "kms:ViaService" && toset(c.values) == toset(["ssm.us-east-1.amazonaws.com"])])
    ])
    error_message = "kms:Decrypt on the secrets key only through SSM."
  }

  assert {
    condition = (
      strcontains(module.boot.node_script, "append_secret HF_TOKEN '/moderation/hf-token' \"$tmp\"")
      && strcontains(module.boot.node_script, "append_secret MODERATION_KAFKA_SASL_PASSWORD '/moderation/kafka-password' \"$tmp\"")
      && strcontains(module.boot.node_script, "value=$(awsc ssm get-parameter --name \"$2\" --with-decryption")
      && strcontains(module.boot.node_script, "readonly NAME='moderation-worker' IMAGE='ghcr.io/acme/moderation-worker@sha256:")
    )
    error_message = "The Hub token and the Kafka password must be read from SSM (retried) into the env file at boot."
  }

  assert {
    condition     = !strcontains(module.boot.script, "HF_TOKEN=") && !strcontains(module.boot.script, "MODERATION_KAFKA_SASL_PASSWORD=")
    error_message = "No secret value may be in user data."
  }

  assert {
    condition = (
      strcontains(module.boot.script, "HF_HUB_OFFLINE=0\n") && strcontains(module.boot.script, "MODERATION_MODEL_ID=zai-org/GLM-4.6V-Flash\n")
      && !strcontains(module.boot.script, "MODERATION_MODEL_LOCAL_FILES_ONLY")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, "--volume '/var/lib/moderation-worker/huggingface:/models/hf'")
      && !strcontains(module.boot.node_script, "s3 sync")
    )
    error_message = "Hub weights: the host cache is mounted at HF_HOME and the hub is online; nothing is synced from S3."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.actions == toset(["ssm:GetParameter"]) && s.resources == toset(["arn:aws:ssm:us-east-1:123456789012:parameter/moderation/kafka-password"])
    ])
    error_message = "The role may read only the Kafka password parameter."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.actions == toset(["cloudwatch:PutMetricData"]) && anytrue([for c in s.condition : c.variable == "cloudwatch:namespace" && toset(c.values) == toset(["ModerationWorker/Kafka"])])
    ])
    error_message = "PutMetricData must be conditioned on the custom namespace."
  }

  assert {
    condition = alltrue([for needle in [
      "MODERATION_KAFKA_BOOTSTRAP_SERVERS=kafka-1.internal:9096,kafka-2.internal:9096\n",
      "MODERATION_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n",
      "MODERATION_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n",
      "MODERATION_KAFKA_SASL_USERNAME=moderation-worker\n",
      "MODERATION_S3_REGION=eu-west-1\n",
      "MODERATION_BATCH_SIZE=32\n",
    ] : strcontains(module.boot.script, needle)])
    error_message = "The env file must carry the existing SCRAM cluster's settings."
  }

  assert {
    condition     = !strcontains(module.boot.node_script, "docker login") && !strcontains(module.boot.node_script, "topics ensure")
    error_message = "No ECR login for a non-ECR image; no topic bootstrap on an existing cluster (its operator creates the topics)."
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.time_lag_high) == 0
    error_message = "The time-lag alarm needs MSK metrics."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.lag_high.namespace == "ModerationWorker/Kafka"
      && aws_cloudwatch_metric_alarm.lag_high.metric_name == "ConsumerGroupLag"
      && aws_cloudwatch_metric_alarm.lag_high.dimensions == tomap({ ConsumerGroup = "moderation-worker", Topic = "moderation.requests" })
    )
    error_message = "The lag alarm must use the custom namespace metric."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.dlq_rate.metric_name == "TopicMessagesIn"
      && aws_cloudwatch_metric_alarm.dlq_rate.statistic == "Sum"
      && aws_cloudwatch_metric_alarm.dlq_rate.period == 60
      && aws_cloudwatch_metric_alarm.dlq_rate.threshold == 5
      && aws_cloudwatch_metric_alarm.dlq_rate.dimensions == tomap({ Topic = "moderation.dlq" })
      && length(aws_cloudwatch_metric_alarm.dlq_rate.metric_query) == 0
    )
    error_message = "The DLQ alarm must count the custom per-topic metric per minute."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.dlq_rate.alarm_actions == toset(["arn:aws:sns:us-east-1:123456789012:moderation-alerts"])
    error_message = "Alarms must notify the SNS topic."
  }

  assert {
    condition     = output.bucket_arn == "arn:aws:s3:::acme-uploads" && output.kafka_bootstrap_servers == "kafka-1.internal:9096,kafka-2.internal:9096"
    error_message = "Outputs must reflect the existing bucket and cluster."
  }
}

run "pinned_ami_session_manager_baked_weights" {
  command = apply

  variables {
    ami_id                     = "ami-0fedcba9876543210"
    enable_ssm_session_manager = true
    instance_type              = "g6e.xlarge"
    model_weights_source       = "image"
    weights_s3_uri             = null
    container_command          = ["run", "--max-events=1000"]
  }

  assert {
    condition = (
      !strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, "--volume")
      && strcontains(module.boot.script, "HF_HUB_OFFLINE=1\n")
      && strcontains(module.boot.script, "MODERATION_MODEL_LOCAL_FILES_ONLY=true\n")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, ":1.4.2' 'run' '--max-events=1000'\n")
    )
    error_message = "Baked weights: no mount over them, hub offline; the command passes through."
  }

  assert {
    condition     = length(data.aws_ssm_parameter.ami) == 0 && aws_launch_template.workers.image_id == "ami-0fedcba9876543210"
    error_message = "A pinned AMI replaces the SSM lookup."
  }

  assert {
    condition     = aws_iam_role_policy_attachment.ssm_core[0].policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "Session Manager opt-in attaches the managed core policy."
  }
}
