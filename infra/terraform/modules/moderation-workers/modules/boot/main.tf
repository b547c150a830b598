# The instance's boot files, rendered from the fleet settings: user data (gzip + base64 for the
# launch template), the node script and its systemd units, the CloudWatch agent configuration.
# Pure templating, no provider: tests/infra/test_terraform.py applies this module on its own to
# shellcheck every rendered script.

terraform {
  required_version = ">= 1.6"
}

variable "config" {
  description = "Fleet settings, as the parent module derives them (see its main.tf). Strings are \"\" when unset."
  type = object({
    name                     = string # fleet name: the Fleet metric dimension
    region                   = string # region of the group (API calls from the instance)
    asg_name                 = string
    launch_hook_name         = string
    drain_hook_name          = string
    container_name           = string
    image                    = string
    command_args             = list(string) # after the image (its ENTRYPOINT is tini -- moderation-worker)
    env                      = map(string)  # the worker's env file, without secrets
    health_port              = number
    stop_timeout             = number # docker stop grace on scale-in, refresh, shutdown
    spot_drain_seconds       = number # docker stop grace after a spot interruption notice
    ecr_registry             = string # "" when the image is not in ECR
    ecr_region               = string
    kafka_password_parameter = string # SSM SecureString names, "" for none
    hf_token_parameter       = string
    weights_source           = string # hub | image | s3
    weights_s3_uri           = string
    weights_host_path        = string
    weights_container_path   = string
    hf_cache_host_path       = string
    hf_cache_container_path  = string
    container_uid            = number
    watchdog_interval        = number       # seconds between /livez checks
    watchdog_failures        = number       # consecutive failures that mark the instance Unhealthy
    watchdog_grace_seconds   = number       # uptime before the watchdog counts (after a reboot)
    launch_deadline_seconds  = number       # uptime at which the launch gate gives up (ABANDON)
    topics                   = list(string) # created at boot; [] for none
    topic_partitions         = number
    topic_replication_factor = number
    topic_retention_ms       = number
    log_group                = string # boot log and the worker units' journal
    metrics_log_group        = string # /metrics as CloudWatch embedded metric format
    metrics_namespace        = string
  })
}

locals {
  c    = var.config
  node = "/usr/local/sbin/moderation-worker-node"

  # systemd owns the container: --rm, no docker restart policy, a stale container removed first.
  # --log-driver none: the output reaches the unit's journal through `docker run` itself, once.
  docker_run = join(" ", concat(
    ["/usr/bin/docker run --rm --name ${local.c.container_name} --gpus all --stop-timeout ${local.c.stop_timeout}"],
    ["--env-file /run/moderation-worker/worker.env --publish ${local.c.health_port}:${local.c.health_port} --log-driver none"],
    local.c.weights_source == "s3" ? ["--volume '${local.c.weights_host_path}:${local.c.weights_container_path}:ro'"] : [],
    local.c.weights_source == "hub" ? ["--volume '${local.c.hf_cache_host_path}:${local.c.hf_cache_container_path}'"] : [],
    ["'${local.c.image}'"],
    [for a in local.c.command_args : "'${a}'"],
  ))

  units = {
    "moderation-worker.service" = <<-EOT
      [Unit]
      Description=Moderation worker (GPU container)
      Requires=docker.service moderation-worker-prepare.service
      After=docker.service moderation-worker-prepare.service
      # Never give up restarting: the watchdog decides when the instance is replaced.
      StartLimitIntervalSec=0

      [Service]
      Restart=always
      RestartSec=10
      ExecStartPre=-/usr/bin/docker rm -f ${local.c.container_name}
      ExecStart=${local.docker_run}
      # SIGTERM through docker stop, then the grace period (shorter after a spot notice).
      ExecStop=${local.node} stop
      TimeoutStopSec=${local.c.stop_timeout + 30}
      LogRateLimitIntervalSec=0

      [Install]
      WantedBy=multi-user.target
    EOT

    "moderation-worker-prepare.service" = <<-EOT
      [Unit]
      Description=Prepare the moderation worker: GPU, storage, secrets, weights, image, topics
      Requires=docker.service
      Wants=network-online.target
      After=docker.service network-online.target

      [Service]
      Type=oneshot
      RemainAfterExit=yes
      ExecStart=${local.node} prepare
      TimeoutStartSec=${local.c.launch_deadline_seconds}
    EOT

    "moderation-worker-launch-gate.service" = <<-EOT
      [Unit]
      Description=Complete the launch lifecycle hook once the worker is ready
      Wants=moderation-worker.service
      After=moderation-worker.service
      ConditionPathExists=!/var/lib/moderation-worker/launched

      [Service]
      Type=oneshot
      ExecStart=${local.node} gate
      TimeoutStartSec=infinity

      [Install]
      WantedBy=multi-user.target
    EOT

    "moderation-worker-watchdog.service" = <<-EOT
      [Unit]
      Description=Mark this instance Unhealthy when the worker's /livez keeps failing

      [Service]
      Type=oneshot
      ExecStart=${local.node} watchdog
      # Room for the retried set-instance-health call.
      TimeoutStartSec=300
    EOT

    "moderation-worker-watchdog.timer" = <<-EOT
      [Unit]
      Description=Check the moderation worker's /livez every ${local.c.watchdog_interval} s

      [Timer]
      OnBootSec=60
      OnUnitActiveSec=${local.c.watchdog_interval}
      AccuracySec=1

      [Install]
      WantedBy=timers.target
    EOT

    "moderation-worker-watch.service" = <<-EOT
      [Unit]
      Description=Drain the moderation worker on a spot interruption notice or ASG termination

      [Service]
      Type=oneshot
      ExecStart=${local.node} watch
      # The drain (grace period) plus the retried complete-lifecycle-action.
      TimeoutStartSec=${local.c.stop_timeout + 180}
    EOT

    "moderation-worker-watch.timer" = <<-EOT
      [Unit]
      Description=Poll IMDSv2 for spot/instance-action and the lifecycle state every 5 s

      [Timer]
      OnBootSec=5
      OnUnitActiveSec=5
      AccuracySec=1

      [Install]
      WantedBy=timers.target
    EOT

    # The CloudWatch agent cannot read the journal: copy the worker units' journal to a file.
    "moderation-worker-journal.service" = <<-EOT
      [Unit]
      Description=Copy the moderation worker units' journal to a file the CloudWatch agent ships

      [Service]
      ExecStart=/usr/bin/journalctl --follow --output=short-iso --cursor-file=/var/lib/moderation-worker/journal.cursor --unit=moderation-worker*
      StandardOutput=append:/var/log/moderation-worker/journal.log
      Restart=always
      RestartSec=5

      [Install]
      WantedBy=multi-user.target
    EOT
  }

  # Enabled and started by user data, in this order; prepare comes with the worker.
  enabled_units = [
    "moderation-worker-journal.service", "moderation-worker-watch.timer", "moderation-worker-watchdog.timer",
    "moderation-worker.service", "moderation-worker-launch-gate.service",
  ]

  cwagent_dir = "/opt/aws/amazon-cloudwatch-agent/etc"

  # Scrape /metrics every minute. The agent turns counters into per-scrape deltas and writes them as
  # embedded metric format to metrics_log_group; `Fleet` (a static label) is the dimension, so the
  # fleet's instances add up in one series. Histograms are dropped by the agent.
  prometheus_config = yamlencode({
    global = { scrape_interval = "1m", scrape_timeout = "10s" }
    scrape_configs = [{
      job_name       = "moderation-worker"
      metrics_path   = "/metrics"
      static_configs = [{ targets = ["127.0.0.1:${local.c.health_port}"], labels = { Fleet = local.c.name } }]
    }]
  })

  cwagent_config = jsonencode({
    agent = { metrics_collection_interval = 60, run_as_user = "root" }
    metrics = {
      namespace         = local.c.metrics_namespace
      append_dimensions = { InstanceId = "$${aws:InstanceId}" }
      # Per-instance series for debugging, plus one fleet-wide aggregate per metric.
      aggregation_dimensions = [["Fleet"]]
      metrics_collected = {
        nvidia_gpu = {
          measurement                 = ["utilization_gpu", "utilization_memory", "memory_used", "memory_total", "temperature_gpu", "power_draw"]
          metrics_collection_interval = 60
          append_dimensions           = { Fleet = local.c.name }
        }
      }
    }
    logs = {
      force_flush_interval = 15
      logs_collected = {
        files = {
          collect_list = [
            { file_path = "/var/log/moderation-worker/bootstrap.log", log_group_name = local.c.log_group, log_stream_name = "{instance_id}/boot" },
            { file_path = "/var/log/moderation-worker/journal.log", log_group_name = local.c.log_group, log_stream_name = "{instance_id}" },
          ]
        }
      }
      metrics_collected = {
        prometheus = {
          log_group_name         = local.c.metrics_log_group
          prometheus_config_path = "${local.cwagent_dir}/moderation-worker-prometheus.yaml"
          emf_processor = {
            metric_namespace         = local.c.metrics_namespace
            metric_declaration_dedup = true
            metric_declaration = [
              {
                # moderation_events_total{outcome="result"} is the results heartbeat.
                source_labels    = ["job"]
                label_matcher    = "^moderation-worker$"
                dimensions       = [["Fleet", "outcome"]]
                metric_selectors = ["^moderation_events_total$"]
              },
              {
                source_labels = ["job"]
                label_matcher = "^moderation-worker$"
                dimensions    = [["Fleet"]]
                metric_selectors = [
                  "^moderation_dead_letters_total$", "^moderation_retries_total$", "^moderation_in_flight_events$",
                  "^moderation_held_partitions$", "^moderation_consumer_lag_records$", "^moderation_model_load_seconds$",
                ]
              },
            ]
          }
        }
      }
    }
  })

  node_script = templatefile("${path.module}/templates/node.sh.tftpl", local.c)

  logrotate = <<-EOT
    /var/log/moderation-worker/*.log {
      daily
      rotate 3
      maxsize 200M
      missingok
      notifempty
      compress
      copytruncate
    }
  EOT

  files = merge(
    { (local.node) = { mode = "0755", content = chomp(local.node_script) } },
    { for name, unit in local.units : "/etc/systemd/system/${name}" => { mode = "0644", content = chomp(unit) } },
    {
      "${local.cwagent_dir}/moderation-worker.json"            = { mode = "0644", content = local.cwagent_config }
      "${local.cwagent_dir}/moderation-worker-prometheus.yaml" = { mode = "0644", content = chomp(local.prometheus_config) }
      "/etc/logrotate.d/moderation-worker"                     = { mode = "0644", content = chomp(local.logrotate) }
    },
  )

  script = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    files     = local.files
    env_lines = [for k in sort(keys(local.c.env)) : "${k}=${local.c.env[k]}"]
    units     = local.enabled_units
  })
}

output "script" {
  description = "The first-boot script (plain text)."
  value       = local.script
}

output "user_data_base64" {
  description = "The script gzip-compressed and base64-encoded, for the launch template (cloud-init unpacks gzip)."
  value       = base64gzip(local.script)
}

output "files" {
  description = "Every file the script installs, by path: { mode, content }."
  value       = local.files
}

output "node_script" {
  description = "The node script (/usr/local/sbin/moderation-worker-node) on its own."
  value       = local.node_script
}
