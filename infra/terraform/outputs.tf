output "pipeline_root" {
  description = "SubmitConfig.pipeline_root"
  value       = "gs://${google_storage_bucket.buckets["pipelines"].name}/root"
}

output "data_bucket" {
  value = google_storage_bucket.buckets["data"].name
}

output "models_bucket" {
  value = google_storage_bucket.buckets["models"].name
}

output "image_repository" {
  description = "Prefix of the image names (component, trainer-cpu/gpu/tpu, beam-worker)"
  value       = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "service_accounts" {
  description = "SubmitConfig.service_account (pipelines), PipelineConfig.service_accounts (training, dataflow), gcloud builds submit --service-account (build)"
  value       = { for name, account in google_service_account.accounts : name => account.email }
}
