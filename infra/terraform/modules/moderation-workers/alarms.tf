# Alarms: consumer lag too high for too long (messages and, on MSK, time), messages arriving in
# the dead-letter topic, and a heartbeat on the verdicts the fleet produces. lag_while_empty
# (scaling.tf) is a scaling trigger, not a page.

locals {
  alarm_actions = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]

  # MSK publishes per-topic MessagesInPerSec per broker (dims Cluster Name, Broker ID, Topic) at
  # PER_TOPIC_PER_BROKER; a Metrics Insights query sums it over however many brokers there are.
  dlq_msk_query = format(
    "SELECT SUM(MessagesInPerSec) FROM SCHEMA(\"AWS/Kafka\", \"Broker ID\", \"Cluster Name\", Topic) WHERE \"Cluster Name\" = '%s' AND Topic = '%s'",
    coalesce(local.msk_metrics_cluster, "unset"), var.dlq_topic,
  )
}

resource "aws_cloudwatch_metric_alarm" "lag_high" {
  alarm_name          = "${var.name}-consumer-lag-high"
  alarm_description   = "Consumer group ${var.group_id} is more than ${var.lag_alarm_threshold} messages behind on ${var.input_topic} for ${var.lag_alarm_minutes} minutes: workers are stuck, failing, or capped at max_size (${var.max_size})."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.lag_alarm_threshold
  evaluation_periods  = var.lag_alarm_minutes
  datapoints_to_alarm = var.lag_alarm_minutes
  period              = 60
  statistic           = "Maximum"
  namespace           = local.lag_metric.namespace
  metric_name         = local.lag_metric.metric_name
  dimensions          = local.lag_metric.dimensions
  # MSK drops lag metrics while the group rebalances; a gap neither fires nor clears the alarm.
  treat_missing_data = "missing"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.common_tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_rate" {
  alarm_name          = "${var.name}-dlq-messages"
  alarm_description   = "More than ${var.dlq_alarm_threshold_per_minute} messages/minute into dead-letter topic ${var.dlq_topic} for ${var.dlq_alarm_minutes} minutes."
  comparison_operator = "GreaterThanThreshold"
  evaluation_periods  = var.dlq_alarm_minutes
  datapoints_to_alarm = var.dlq_alarm_minutes
  # MSK's metric is a per-second rate, the custom one a per-minute count.
  threshold = local.lag_from_msk ? var.dlq_alarm_threshold_per_minute / 60 : var.dlq_alarm_threshold_per_minute

  # Custom namespace: messages produced to the DLQ topic, summed per minute.
  namespace   = local.lag_from_msk ? null : var.custom_metric_namespace
  metric_name = local.lag_from_msk ? null : var.custom_topic_messages_metric_name
  dimensions  = local.lag_from_msk ? null : { Topic = var.dlq_topic }
  statistic   = local.lag_from_msk ? null : "Sum"
  period      = local.lag_from_msk ? null : 60

  dynamic "metric_query" {
    for_each = local.lag_from_msk ? [local.dlq_msk_query] : []
    content {
      id          = "dlq_in"
      label       = "Messages/s into ${var.dlq_topic}"
      expression  = metric_query.value
      period      = 60
      return_data = true
    }
  }

  # No messages into the DLQ means no datapoints: that is the healthy state.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.common_tags
}

# Time lag: the oldest unconsumed message is too old, whatever the message count.
resource "aws_cloudwatch_metric_alarm" "time_lag_high" {
  count = local.lag_from_msk ? 1 : 0

  alarm_name          = "${var.name}-consumer-time-lag-high"
  alarm_description   = "Consumer group ${var.group_id} is more than ${var.time_lag_alarm_seconds} s behind on ${var.input_topic} for ${var.time_lag_alarm_minutes} minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.time_lag_alarm_seconds
  evaluation_periods  = var.time_lag_alarm_minutes
  datapoints_to_alarm = var.time_lag_alarm_minutes
  period              = 60
  statistic           = "Maximum"
  namespace           = "AWS/Kafka"
  metric_name         = "EstimatedMaxTimeLag"
  dimensions          = local.lag_metric.dimensions
  # Like the offset lag: no data during a rebalance.
  treat_missing_data = "missing"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.common_tags
}

# Heartbeat: verdicts per minute from the whole fleet (the agent's scrape of /metrics,
# moderation_events_total{outcome="result"}). It fires when there is lag but no verdict, and when
# the data stops altogether (no agent, no lag metric: treat_missing_data = breaching). An idle
# fleet with no lag reports 1 and stays OK.
resource "aws_cloudwatch_metric_alarm" "results_heartbeat" {
  alarm_name          = "${var.name}-results-heartbeat"
  alarm_description   = "No verdicts from ${var.name} for ${var.heartbeat_alarm_minutes} minutes while ${var.input_topic} has lag, or no metrics at all: the workers are down, stuck or not shipping metrics."
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  evaluation_periods  = var.heartbeat_alarm_minutes
  datapoints_to_alarm = var.heartbeat_alarm_minutes
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags

  metric_query {
    id          = "results"
    return_data = false

    metric {
      namespace   = var.metrics_namespace
      metric_name = "moderation_events_total"
      dimensions  = { Fleet = var.name, outcome = "result" }
      stat        = "Sum"
      period      = 60
    }
  }

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
    id          = "heartbeat"
    label       = "Verdicts per minute while there is lag"
    expression  = "IF(FILL(lag, 0) > 0, FILL(results, 0), 1)"
    return_data = true
  }
}
