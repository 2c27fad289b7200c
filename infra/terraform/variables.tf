variable "project" {
  description = "Google Cloud project ID"
  type        = string
}

variable "region" {
  description = "Region of the buckets, the Artifact Registry repository, Vertex AI and Dataflow"
  type        = string
  default     = "us-central1"
}

variable "prefix" {
  description = "Prefix of bucket and resource names"
  type        = string
  default     = "bertkeras"
}

variable "kms_key" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) for bucket and registry encryption; empty = Google-managed keys"
  type        = string
  default     = ""
}

variable "pipeline_artifact_retention_days" {
  description = "Days after which intermediate pipeline artifacts are deleted"
  type        = number
  default     = 30
}

variable "log_bucket" {
  description = "Bucket receiving access logs of the buckets created here; empty = no access logging"
  type        = string
  default     = ""
}
