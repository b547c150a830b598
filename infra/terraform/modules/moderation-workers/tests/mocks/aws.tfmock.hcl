# Shared AWS mock for every test file (terraform test, mock_provider "aws" { source = "./tests/mocks" }).
# Computed values that the module turns into ARNs, user data or assertions are fixed here; the rest
# the mock provider invents.

mock_data "aws_partition" {
  defaults = {
    partition  = "aws"
    dns_suffix = "amazonaws.com"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "us-east-1"
  }
}

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
  }
}

# The DLAMI id the SSM public parameter would return.
mock_data "aws_ssm_parameter" {
  defaults = {
    value          = "ami-0123456789abcdef0"
    insecure_value = "ami-0123456789abcdef0"
    type           = "String"
  }
}

# The provider would render the statements to JSON; the tests assert on the statements themselves.
mock_data "aws_iam_policy_document" {
  defaults = {
    json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
  }
}

mock_resource "aws_msk_cluster" {
  defaults = {
    arn                        = "arn:aws:kafka:us-east-1:123456789012:cluster/moderation-worker/11111111-2222-3333-4444-555555555555-1"
    bootstrap_brokers_sasl_iam = "b-1.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098,b-2.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098,b-3.moderationworker.abc123.c2.kafka.us-east-1.amazonaws.com:9098"
  }
}

mock_resource "aws_msk_configuration" {
  defaults = {
    arn             = "arn:aws:kafka:us-east-1:123456789012:configuration/moderation-worker-kafka/11111111-2222-3333-4444-555555555555-1"
    latest_revision = 1
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/moderation-worker/moderation-worker"
  }
}

# A real group ARN carries a UUID; the role policy must not use it (it builds the ARN from the name).
mock_resource "aws_autoscaling_group" {
  defaults = {
    arn = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:11111111-2222-3333-4444-555555555555:autoScalingGroupName/moderation-worker"
  }
}

mock_resource "aws_autoscaling_policy" {
  defaults = {
    arn = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:11111111-2222-3333-4444-555555555555:autoScalingGroupName/moderation-worker:policyName/moderation-worker-start-from-zero"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    latest_version = 3
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::123456789012:role/moderation-worker-instance"
  }
}

mock_resource "aws_iam_instance_profile" {
  defaults = {
    arn = "arn:aws:iam::123456789012:instance-profile/moderation-worker-instance"
  }
}

mock_resource "aws_security_group" {
  defaults = {
    id = "sg-0123456789abcdef0"
  }
}

mock_resource "aws_cloudwatch_metric_alarm" {
  defaults = {
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:moderation-worker"
  }
}
