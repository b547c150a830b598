# Scale on consumer-group lag: target tracking on (input-topic lag / in-service workers), and a
# step policy that starts one worker when there is lag while the group is at zero (target
# tracking alone waits until lag exceeds the target per worker).

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

# Start from zero: any lag while the desired capacity is 0 sets it to 1. ExactCapacity is
# idempotent (the alarm re-invokes the policy every minute it stays in ALARM) and never lowers a
# desired count that target tracking raised: the alarm is only true at zero.
resource "aws_autoscaling_policy" "start_from_zero" {
  name                   = "${var.name}-start-from-zero"
  autoscaling_group_name = aws_autoscaling_group.workers.name
  policy_type            = "StepScaling"
  adjustment_type        = "ExactCapacity"

  step_adjustment {
    scaling_adjustment          = 1
    metric_interval_lower_bound = 0
  }
}

resource "aws_cloudwatch_metric_alarm" "lag_while_empty" {
  alarm_name          = "${var.name}-lag-while-empty"
  alarm_description   = "Consumer group ${var.group_id} has lag on ${var.input_topic} while ${local.asg_name} wants 0 workers: start one (${aws_autoscaling_policy.start_from_zero.name})."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  # A gap (a rebalance, no group yet) is no reason to start a GPU instance.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_autoscaling_policy.start_from_zero.arn]
  tags               = local.common_tags

  metric_query {
    id          = "lag"
    return_data = false

    metric {
      namespace   = local.lag_metric.namespace
      metric_name = local.lag_metric.metric_name
      dimensions  = local.lag_metric.dimensions
      stat        = "Maximum"
      period      = 60
    }
  }

  metric_query {
    id          = "desired"
    return_data = false

    metric {
      namespace   = "AWS/AutoScaling"
      metric_name = "GroupDesiredCapacity"
      dimensions  = { AutoScalingGroupName = local.asg_name }
      stat        = "Maximum"
      period      = 60
    }
  }

  metric_query {
    id          = "lag_at_zero"
    label       = "Lag while the group is at zero"
    expression  = "IF(desired < 1, lag, 0)"
    return_data = true
  }
}
