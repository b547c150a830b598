terraform {
  # 1.6: `terraform test` with mock providers needs 1.7; the module itself runs on 1.6+.
  # Cross-variable rules are preconditions (not 1.9-style cross-variable validations) to keep 1.6.
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
