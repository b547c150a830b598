# Alarms: consumer lag too high for too long, and messages arriving in the dead-letter topic.

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
