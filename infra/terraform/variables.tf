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
  description = "Days after which intermediate pipeline artifacts (the pipelines bucket's root/, dataflow/, cloudbuild/) are deleted; keep it longer than runs reuse cached steps"
  type        = number
  default     = 30
}

variable "image_retention_days" {
  description = "Days after which tagged images are deleted, beyond the newest images_kept of each image"
  type        = number
  default     = 180
}

variable "images_kept" {
  description = "Newest versions of each image kept whatever their age"
  type        = number
  default     = 20
}

variable "build_submitters" {
  description = "Members (user:..., group:...) who may run Cloud Build as the build account"
  type        = list(string)
  default     = []
}

variable "log_bucket" {
  description = "Bucket receiving access logs of the buckets created here; empty = no access logging"
  type        = string
  default     = ""
}
