# Scale on consumer-group lag: target tracking on (input-topic lag / in-service workers).

locals {
  lag_from_msk = var.lag_metric_source == "msk"

  lag_metric = local.lag_from_msk ? {
    namespace   = "AWS/Kafka"
    metric_name = "SumOffsetLag"
    dimensions = {
      "Cluster Name"   = coalesce(local.msk_metrics_cluster, "unset")
      "Consumer Group" = var.group_id
      "Topic"          = var.input_topic
    }
    } : {
    namespace   = var.custom_metric_namespace
    metric_name = var.custom_lag_metric_name
    dimensions = {
      "ConsumerGroup" = var.group_id
      "Topic"         = var.input_topic
    }
  }

  # Lag per in-service worker; with no worker in service, the whole lag (so scale-out from 0 works).
  lag_per_instance_expression = "lag / IF(workers < 1, 1, workers)"
}

resource "aws_autoscaling_policy" "lag_target_tracking" {
  name                   = "${var.name}-lag-per-instance"
  autoscaling_group_name = aws_autoscaling_group.workers.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value     = var.target_lag_per_instance
    disable_scale_in = !var.scale_in_enabled

    customized_metric_specification {
      metrics {
        id          = "lag"
        label       = "Consumer group lag on ${var.input_topic}"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = local.lag_metric.namespace
            metric_name = local.lag_metric.metric_name

            dynamic "dimensions" {
              for_each = local.lag_metric.dimensions
              content {
                name  = dimensions.key
                value = dimensions.value
              }
            }
          }
        }
      }

      metrics {
        id          = "workers"
        label       = "In-service workers"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "AWS/AutoScaling"
            metric_name = "GroupInServiceInstances"

            dimensions {
              name  = "AutoScalingGroupName"
              value = aws_autoscaling_group.workers.name
            }
          }
        }
      }

      metrics {
        id          = "lag_per_worker"
        label       = "Lag per in-service worker"
        expression  = local.lag_per_instance_expression
        return_data = true
      }
    }
  }

  lifecycle {
    precondition {
      condition     = !local.lag_from_msk || local.msk_metrics_cluster != null
      error_message = "lag_metric_source = \"msk\" needs an MSK cluster: create_msk_cluster = true, or msk_cluster_name of the existing one. For other Kafka clusters use lag_metric_source = \"custom\"."
    }
  }
}
