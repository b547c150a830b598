# How the fleet runs: the worker under systemd, health reaching the group, gated and reversible
# rollouts, the first apply, weights, topics, spot, scaling from zero, and what the CloudWatch
# agent ships. Mocked AWS provider (terraform test, >= 1.7); the boot files are asserted through
# the boot submodule's outputs (the launch template carries them gzip-compressed).

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

# --- The worker is a systemd unit -------------------------------------------------------------------

run "worker_runs_under_systemd" {
  command = apply

  assert {
    condition = alltrue([for line in [
      "Requires=docker.service moderation-worker-prepare.service\n",
      "StartLimitIntervalSec=0\n",
      "Restart=always\n",
      "ExecStartPre=-/usr/bin/docker rm -f moderation-worker\n",
      "ExecStart=/usr/bin/docker run --rm --name moderation-worker ",
      "ExecStop=/usr/local/sbin/moderation-worker-node stop\n",
      "TimeoutStopSec=210\n",
      "WantedBy=multi-user.target",
    ] : strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, line)])
    error_message = "The worker must be an enabled unit that always restarts, removes a stale container first, runs it with --rm and drains through ExecStop."
  }

  assert {
    condition     = !strcontains(module.boot.script, "--restart") && !strcontains(module.boot.script, "docker update")
    error_message = "systemd owns restarts: no docker restart policy, and no drain that turns it off."
  }

  assert {
    condition     = strcontains(module.boot.script, "systemctl enable moderation-worker-journal.service moderation-worker-watch.timer moderation-worker-watchdog.timer moderation-worker.service moderation-worker-launch-gate.service\n")
    error_message = "First boot must enable the worker, the gate, the timers and the journal copy, so all of them come back after a reboot."
  }

  assert {
    condition = (
      strcontains(module.boot.node_script, "docker stop --time \"$grace\" \"$NAME\"")
      && strcontains(module.boot.node_script, "local grace='180'")
    )
    error_message = "ExecStop must docker stop with the grace period (SIGTERM, then stop_timeout_seconds)."
  }

  assert {
    condition = (
      strcontains(module.boot.files["/etc/systemd/system/moderation-worker-prepare.service"].content, "Type=oneshot\n")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker-prepare.service"].content, "ExecStart=/usr/local/sbin/moderation-worker-node prepare\n")
      && strcontains(module.boot.node_script, "write_env \"$(instance_id)\"")
    )
    error_message = "Every boot prepares the env file (tmpfs, with secrets), weights and image before the worker starts."
  }
}

# --- Health reaches the Auto Scaling group ---------------------------------------------------------

run "watchdog_marks_unhealthy" {
  command = apply

  variables {
    watchdog_interval_seconds    = 20
    watchdog_failure_threshold   = 4
    watchdog_start_grace_seconds = 900
  }

  assert {
    condition     = aws_autoscaling_group.workers.health_check_type == "EC2" && aws_autoscaling_group.workers.health_check_grace_period == 300
    error_message = "No load balancer: EC2 health checks with a grace period."
  }

  assert {
    condition = (
      strcontains(module.boot.files["/etc/systemd/system/moderation-worker-watchdog.timer"].content, "OnUnitActiveSec=20\n")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker-watchdog.service"].content, "ExecStart=/usr/local/sbin/moderation-worker-node watchdog")
    )
    error_message = "A timer must run the watchdog every watchdog_interval_seconds."
  }

  assert {
    condition = alltrue([for needle in [
      "probe() { curl -fs -m 5 -o /dev/null \"http://127.0.0.1:$PORT/$1\"; }",
      "PORT='8080'",
      "if probe livez; then",
      "[ \"$n\" -ge '4' ]",
      "[ \"$(uptime_s)\" -lt '900' ]",
      "--health-status Unhealthy",
      "unhealthy \"/livez failed $n times in a row\"",
    ] : strcontains(module.boot.node_script, needle)])
    error_message = "The watchdog must poll 127.0.0.1:<health port>/livez and after N consecutive failures (past the start grace) mark the instance Unhealthy."
  }
}

# --- Rollouts -----------------------------------------------------------------------------------------

run "launch_hook_gates_on_readyz" {
  command = apply

  variables {
    launch_timeout_seconds = 2400
  }

  assert {
    condition = anytrue([for h in aws_autoscaling_group.workers.initial_lifecycle_hook :
      h.name == "moderation-worker-launch" && h.lifecycle_transition == "autoscaling:EC2_INSTANCE_LAUNCHING"
      && h.heartbeat_timeout == 2400 && h.default_result == "ABANDON"
    ])
    error_message = "A launch hook must hold new instances for launch_timeout_seconds and ABANDON them by default."
  }

  assert {
    condition = alltrue([for needle in [
      "until probe readyz; do",
      "[ \"$(uptime_s)\" -ge '2340' ]",
      "lifecycle 'moderation-worker-launch' CONTINUE",
      "lifecycle 'moderation-worker-launch' ABANDON",
      "--lifecycle-action-result \"$2\"",
    ] : strcontains(module.boot.node_script, needle)])
    error_message = "The gate must CONTINUE only once /readyz passes and ABANDON a minute before the hook times out."
  }

  assert {
    condition     = strcontains(module.boot.files["/etc/systemd/system/moderation-worker-launch-gate.service"].content, "ConditionPathExists=!/var/lib/moderation-worker/launched\n")
    error_message = "The gate runs until the first launch completed, not after reboots."
  }
}

run "instance_refresh_is_gated_and_reversible" {
  command = apply

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].preferences[0].auto_rollback == true
    error_message = "A failed refresh must roll back automatically."
  }

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].preferences[0].max_healthy_percentage == 200
    error_message = "A refresh must launch replacements before terminating (max_healthy_percentage = 200)."
  }

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].preferences[0].min_healthy_percentage == 100
    error_message = "A refresh must keep the whole fleet in service (min_healthy_percentage = 100): one instance never drops to zero."
  }

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].preferences[0].skip_matching == true
    error_message = "Instances already on the new template are skipped."
  }

  assert {
    condition     = aws_autoscaling_group.workers.instance_refresh[0].preferences[0].alarm_specification[0].alarms == tolist([aws_cloudwatch_metric_alarm.dlq_rate.alarm_name])
    error_message = "The refresh must roll back when the dead-letter alarm fires."
  }

  assert {
    condition = (
      aws_autoscaling_group.workers.instance_maintenance_policy[0].min_healthy_percentage == 100
      && aws_autoscaling_group.workers.instance_maintenance_policy[0].max_healthy_percentage == 200
    )
    error_message = "Health replacements must launch before terminating too."
  }
}

run "refresh_without_alarm_rollback" {
  command = apply

  variables {
    instance_refresh_alarm_rollback = false
  }

  assert {
    condition     = length(aws_autoscaling_group.workers.instance_refresh[0].preferences[0].alarm_specification) == 0 && aws_autoscaling_group.workers.instance_refresh[0].preferences[0].auto_rollback
    error_message = "The alarm rollback is optional; auto_rollback stays."
  }
}

# --- First apply: the role policy never waits for the group ---------------------------------------------

# A plan: anything the policy took from the group (or another resource's computed attribute) would
# be unknown here, and the assertion could not be evaluated.
run "role_policy_is_known_before_the_group" {
  command = plan

  variables {
    create_msk_cluster      = false
    kafka_bootstrap_servers = "kafka-1.internal:9092"
    lag_metric_source       = "custom"
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "OwnLifecycle"]) == toset(["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/moderation-worker"])
    error_message = "The lifecycle/health grant must use an ARN built from the group's name, known at plan time."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.actions if s.sid == "OwnLifecycle"]) == toset(["autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth"])
    error_message = "The role may complete lifecycle actions and set its health."
  }
}

run "aws_calls_are_retried" {
  command = apply

  assert {
    condition = alltrue([for needle in [
      "awsc() { retry 6 aws --region \"$REGION\" \"$@\"; }",
      "retry 5 aws --region \"$REGION\" s3 sync",
      "retry 5 ecr_login",
      "retry 5 docker pull --quiet \"$IMAGE\"",
      "awsc autoscaling complete-lifecycle-action",
      "awsc autoscaling set-instance-health",
      "delay=$((delay * 2 > 60 ? 60 : delay * 2))",
    ] : strcontains(module.boot.node_script, needle)])
    error_message = "Every AWS call from the instance must go through the bounded retry with backoff."
  }
}

# --- Weights from S3 ----------------------------------------------------------------------------------

run "weights_come_from_s3" {
  command = apply

  variables {
    weights_kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/22222222-3333-4444-5555-666666666666"
  }

  assert {
    condition = alltrue([for line in [
      "MODERATION_MODEL_ID=/models/weights\n",
      "MODERATION_MODEL_REVISION=0123456789abcdef0123456789abcdef01234567\n",
      "MODERATION_MODEL_LOCAL_FILES_ONLY=true\n",
      "HF_HUB_OFFLINE=1\n",
    ] : strcontains(module.boot.script, line)])
    error_message = "S3 weights: the model is the local folder at the pinned revision, the hub offline."
  }

  assert {
    condition = (
      strcontains(module.boot.node_script, "s3 sync --only-show-errors --no-progress --delete 's3://acme-models/zai-org/GLM-4.6V-Flash/0123456789abcdef0123456789abcdef01234567/' '/var/lib/moderation-worker/weights'")
      && strcontains(module.boot.node_script, "/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker.service"].content, "--volume '/var/lib/moderation-worker/weights:/models/weights:ro'")
    )
    error_message = "The weights must be synced at boot to instance storage and mounted read-only."
  }

  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.workers.statement :
      s.sid == "DecryptWeightsThroughS3" && s.resources == toset([var.weights_kms_key_arn])
      && anytrue([for c in s.condition : c.variable == "kms:ViaService" && toset(c.values) == toset(["s3.*.amazonaws.com"])])
    ])
    error_message = "kms:Decrypt on the weights key, through S3 only."
  }
}

# --- Topics on the created MSK cluster ------------------------------------------------------------------

run "topics_are_created_at_boot" {
  command = apply

  variables {
    kafka_topic_partitions   = 24
    kafka_topic_retention_ms = 259200000
  }

  assert {
    condition     = strcontains(module.boot.node_script, "retry 5 docker run --rm --log-driver none --env-file \"$ENV_FILE\" \"$IMAGE\" topics ensure \\\n    --partitions '24' --replication-factor '3' \\\n    --retention-ms '259200000' 'moderation.requests' 'moderation.results' 'moderation.dlq' 'moderation.review'\n")
    error_message = "prepare must run `topics ensure` with the partitions, RF 3, the retention and the four topic names."
  }

  assert {
    condition = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "KafkaCreateTopics"]) == toset([
      for t in ["moderation.requests", "moderation.results", "moderation.dlq", "moderation.review"] :
      "arn:aws:kafka:us-east-1:123456789012:topic/moderation-worker/11111111-2222-3333-4444-555555555555-1/${t}"
    ])
    error_message = "CreateTopic must be limited to the four topics."
  }

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.actions if s.sid == "KafkaCreateTopics"]) == toset(["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic", "kafka-cluster:DescribeTopicDynamicConfiguration"])
    error_message = "The bootstrap may create and describe topics, nothing else."
  }
}

run "msk_iam_permissions_act_as_acls" {
  command = apply

  assert {
    condition     = one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "KafkaConnect"]) == toset(["arn:aws:kafka:us-east-1:123456789012:cluster/moderation-worker/11111111-2222-3333-4444-555555555555-1"])
    error_message = "Connect on the created cluster only."
  }

  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "KafkaReadRequests"]) == toset(["arn:aws:kafka:us-east-1:123456789012:topic/moderation-worker/11111111-2222-3333-4444-555555555555-1/moderation.requests"])
      && one([for s in data.aws_iam_policy_document.workers.statement : s.actions if s.sid == "KafkaReadRequests"]) == toset(["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"])
    )
    error_message = "ReadData on the requests topic only."
  }

  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "KafkaWriteOutputs"]) == toset([
        for t in ["moderation.results", "moderation.dlq", "moderation.review"] :
        "arn:aws:kafka:us-east-1:123456789012:topic/moderation-worker/11111111-2222-3333-4444-555555555555-1/${t}"
      ])
      && one([for s in data.aws_iam_policy_document.workers.statement : s.actions if s.sid == "KafkaWriteOutputs"]) == toset(["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"])
    )
    error_message = "WriteData on the results, dead-letter and review topics only."
  }

  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.workers.statement : s.resources if s.sid == "KafkaConsumerGroup"]) == toset(["arn:aws:kafka:us-east-1:123456789012:group/moderation-worker/11111111-2222-3333-4444-555555555555-1/moderation-worker"])
      && one([for s in data.aws_iam_policy_document.workers.statement : s.actions if s.sid == "KafkaConsumerGroup"]) == toset(["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"])
    )
    error_message = "Group permissions on the worker's consumer group only."
  }

  assert {
    condition     = output.kafka_topic_arns["moderation.results"] == "arn:aws:kafka:us-east-1:123456789012:topic/moderation-worker/11111111-2222-3333-4444-555555555555-1/moderation.results"
    error_message = "The topic ARNs are an output, for other clients' policies."
  }
}

# --- Spot and the capacity mix ------------------------------------------------------------------------

run "mixed_instances_on_demand_base_spot_above" {
  command = apply

  variables {
    on_demand_base_capacity    = 2
    spot_percentage_above_base = 75
    instance_types             = ["g5.xlarge", "g6e.xlarge"]
  }

  assert {
    condition = (
      aws_autoscaling_group.workers.mixed_instances_policy[0].instances_distribution[0].on_demand_base_capacity == 2
      && aws_autoscaling_group.workers.mixed_instances_policy[0].instances_distribution[0].on_demand_percentage_above_base_capacity == 25
      && aws_autoscaling_group.workers.mixed_instances_policy[0].instances_distribution[0].spot_allocation_strategy == "price-capacity-optimized"
    )
    error_message = "On-demand base, then spot_percentage_above_base % spot, price-capacity-optimized."
  }

  assert {
    condition     = [for o in aws_autoscaling_group.workers.mixed_instances_policy[0].launch_template[0].override : o.instance_type] == ["g6.xlarge", "g5.xlarge", "g6e.xlarge"]
    error_message = "instance_type first, then instance_types, as overrides."
  }

  assert {
    condition     = aws_autoscaling_group.workers.capacity_rebalance == true
    error_message = "Capacity rebalancing replaces spot instances at elevated risk ahead of the interruption."
  }
}

run "spot_notice_drains_within_two_minutes" {
  command = apply

  variables {
    spot_drain_seconds = 80
  }

  assert {
    condition = (
      strcontains(module.boot.files["/etc/systemd/system/moderation-worker-watch.timer"].content, "OnUnitActiveSec=5\n")
      && strcontains(module.boot.files["/etc/systemd/system/moderation-worker-watch.service"].content, "ExecStart=/usr/local/sbin/moderation-worker-node watch")
    )
    error_message = "A timer must poll every 5 s."
  }

  assert {
    condition = alltrue([for needle in [
      "imds spot/instance-action >/dev/null",
      "echo '80' >\"$RUN/stop-grace\"",
      "systemctl stop moderation-worker.service",
      "X-aws-ec2-metadata-token",
    ] : strcontains(module.boot.node_script, needle)])
    error_message = "A spot notice (IMDSv2) must drain the worker through systemctl stop with the spot grace period."
  }

  assert {
    condition = (
      strcontains(module.boot.node_script, "= Terminated ]")
      && strcontains(module.boot.node_script, "lifecycle 'moderation-worker-drain' CONTINUE")
      && anytrue([for h in aws_autoscaling_group.workers.initial_lifecycle_hook : h.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" && h.default_result == "CONTINUE"])
    )
    error_message = "Scale-in and refresh still drain through the termination hook."
  }
}

# --- Scaling from zero, and the alarms -------------------------------------------------------------------

run "starts_one_worker_on_lag_at_zero" {
  command = apply

  assert {
    condition = (
      aws_autoscaling_policy.start_from_zero.policy_type == "StepScaling"
      && aws_autoscaling_policy.start_from_zero.adjustment_type == "ExactCapacity"
      && one(aws_autoscaling_policy.start_from_zero.step_adjustment).scaling_adjustment == 1
      && one(aws_autoscaling_policy.start_from_zero.step_adjustment).metric_interval_lower_bound == "0"
    )
    error_message = "A step policy must set the capacity to exactly one."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.lag_while_empty.alarm_actions == toset([aws_autoscaling_policy.start_from_zero.arn])
      && aws_cloudwatch_metric_alarm.lag_while_empty.threshold == 0
      && aws_cloudwatch_metric_alarm.lag_while_empty.comparison_operator == "GreaterThanThreshold"
      && anytrue([for q in aws_cloudwatch_metric_alarm.lag_while_empty.metric_query : q.expression == "IF(desired < 1, lag, 0)" && q.return_data])
      && anytrue([for q in aws_cloudwatch_metric_alarm.lag_while_empty.metric_query : q.id == "lag" && try(q.metric[0].metric_name, null) == "SumOffsetLag"])
      && anytrue([for q in aws_cloudwatch_metric_alarm.lag_while_empty.metric_query : q.id == "desired" && try(q.metric[0].metric_name, null) == "GroupDesiredCapacity" && try(q.metric[0].dimensions, null) == tomap({ AutoScalingGroupName = "moderation-worker" })])
    )
    error_message = "Any lag while the desired capacity is 0 must trigger the start-from-zero policy."
  }
}

run "time_lag_and_heartbeat_alarms" {
  command = apply

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.time_lag_high[0].namespace == "AWS/Kafka"
      && aws_cloudwatch_metric_alarm.time_lag_high[0].metric_name == "EstimatedMaxTimeLag"
      && aws_cloudwatch_metric_alarm.time_lag_high[0].dimensions == tomap({ "Cluster Name" = "moderation-worker", "Consumer Group" = "moderation-worker", Topic = "moderation.requests" })
      && aws_cloudwatch_metric_alarm.time_lag_high[0].threshold == 900
    )
    error_message = "A time-lag alarm on EstimatedMaxTimeLag of the group on the input topic."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.results_heartbeat.treat_missing_data == "breaching"
      && aws_cloudwatch_metric_alarm.results_heartbeat.comparison_operator == "LessThanThreshold"
      && aws_cloudwatch_metric_alarm.results_heartbeat.evaluation_periods == 45
      && anytrue([for q in aws_cloudwatch_metric_alarm.results_heartbeat.metric_query : q.id == "results" && try(q.metric[0].namespace, null) == "ModerationWorker" && try(q.metric[0].metric_name, null) == "moderation_events_total" && try(q.metric[0].dimensions, null) == tomap({ Fleet = "moderation-worker", outcome = "result" })])
      && anytrue([for q in aws_cloudwatch_metric_alarm.results_heartbeat.metric_query : q.return_data && q.expression == "IF(FILL(lag, 0) > 0, FILL(results, 0), 1)"])
    )
    error_message = "The results heartbeat must count verdicts from the agent's metrics, gate on lag and treat missing data as breaching."
  }
}

run "cloudwatch_agent_ships_metrics_and_logs" {
  command = apply

  assert {
    condition = (
      contains(keys(jsondecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker.json"].content).metrics.metrics_collected), "nvidia_gpu")
      && jsondecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker.json"].content).metrics.namespace == "ModerationWorker"
    )
    error_message = "The agent must publish nvidia_gpu metrics in metrics_namespace."
  }

  assert {
    condition = (
      jsondecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker.json"].content).logs.metrics_collected.prometheus.log_group_name == "/moderation-worker/moderation-worker/metrics"
      && yamldecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker-prometheus.yaml"].content).scrape_configs[0].static_configs[0].targets == ["127.0.0.1:8080"]
      && yamldecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker-prometheus.yaml"].content).scrape_configs[0].metrics_path == "/metrics"
    )
    error_message = "The agent must scrape 127.0.0.1:<health port>/metrics into the metrics log group."
  }

  assert {
    condition = toset([for f in jsondecode(module.boot.files["/opt/aws/amazon-cloudwatch-agent/etc/moderation-worker.json"].content).logs.logs_collected.files.collect_list : "${f.file_path}>${f.log_group_name}"]) == toset([
      "/var/log/moderation-worker/bootstrap.log>/moderation-worker/moderation-worker",
      "/var/log/moderation-worker/journal.log>/moderation-worker/moderation-worker",
    ])
    error_message = "The agent must ship the boot log and the worker units' journal to the worker log group."
  }

  assert {
    condition     = strcontains(module.boot.files["/etc/systemd/system/moderation-worker-journal.service"].content, "--unit=moderation-worker*") && strcontains(module.boot.files["/etc/systemd/system/moderation-worker-journal.service"].content, "StandardOutput=append:/var/log/moderation-worker/journal.log")
    error_message = "The worker units' journal (the container's output included) must be copied to the shipped file."
  }

  assert {
    condition     = aws_cloudwatch_log_group.metrics.retention_in_days == 90 && aws_cloudwatch_log_group.metrics.name == "/moderation-worker/moderation-worker/metrics"
    error_message = "The metrics log group is created with the log retention."
  }
}
