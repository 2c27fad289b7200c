locals {
  apis = [
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "storage.googleapis.com",
    "tpu.googleapis.com",
  ]
  buckets = {
    pipelines = { purpose = "pipeline root: intermediate artifacts of pipeline runs", expire = true }
    data      = { purpose = "corpora, labelled data and TFRecords", expire = false }
    models    = { purpose = "converted checkpoints, training runs and exported models", expire = false }
  }
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}

# --- storage -------------------------------------------------------------------------------------------------
resource "google_storage_bucket" "buckets" {
  for_each                    = local.buckets
  name                        = "${var.project}-${var.prefix}-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = { purpose = replace(each.key, "_", "-"), app = var.prefix }

  versioning {
    enabled = !each.value.expire
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.expire ? [1] : []
    content {
      condition {
        age = var.pipeline_artifact_retention_days
      }
      action {
        type = "Delete"
      }
    }
  }

  # Keep at most 3 old versions of data and models, each for 30 days.
  dynamic "lifecycle_rule" {
    for_each = each.value.expire ? [] : [1]
    content {
      condition {
        num_newer_versions = 3
        with_state         = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.expire ? [] : [1]
    content {
      condition {
        days_since_noncurrent_time = 30
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key == "" ? [] : [1]
    content {
      default_kms_key_name = var.kms_key
    }
  }

  dynamic "logging" {
    for_each = var.log_bucket == "" ? [] : [1]
    content {
      log_bucket = var.log_bucket
    }
  }

  depends_on = [google_project_service.apis]
}

# --- container images --------------------------------------------------------------------------------------------
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.prefix
  description   = "bertkeras images: component, trainer (cpu/gpu/tpu), beam-worker"
  format        = "DOCKER"
  kms_key_name  = var.kms_key == "" ? null : var.kms_key

  docker_config {
    immutable_tags = true
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  depends_on = [google_project_service.apis]
}

# --- identities (least privilege) ----------------------------------------------------------------------------------
resource "google_service_account" "pipelines" {
  account_id   = "${var.prefix}-pipelines"
  display_name = "bertkeras Vertex AI pipelines"
}

resource "google_service_account" "dataflow" {
  account_id   = "${var.prefix}-dataflow"
  display_name = "bertkeras Dataflow workers"
}

resource "google_service_account" "training" {
  account_id   = "${var.prefix}-training"
  display_name = "bertkeras training jobs (custom jobs on GPU / TPU)"
}

# Project-level roles: only those that cannot be granted on a single resource.
resource "google_project_iam_member" "pipelines" {
  # checkov:skip=CKV_GCP_49:launching Dataflow jobs needs dataflow.developer on the project; the jobs run as the dataflow identity, which the pipelines identity may act as (below) and no other.
  for_each = toset([
    "roles/aiplatform.user",    # create custom jobs, pipeline jobs, upload models
    "roles/dataflow.developer", # launch Dataflow jobs from the preprocessing component
    "roles/logging.logWriter",
  ])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.pipelines.email}"
}

resource "google_project_iam_member" "dataflow" {
  for_each = toset(["roles/dataflow.worker", "roles/logging.logWriter"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_project_iam_member" "training" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.training.email}"
}

# The pipelines identity runs jobs as the two worker identities, and nothing else.
resource "google_service_account_iam_member" "pipelines_act_as" {
  for_each           = { dataflow = google_service_account.dataflow.name, training = google_service_account.training.name }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.pipelines.email}"
}

# Bucket-level access: each identity gets only the buckets it reads or writes.
resource "google_storage_bucket_iam_member" "object_admin" {
  for_each = {
    pipelines_pipelines = { bucket = "pipelines", sa = google_service_account.pipelines.email }
    pipelines_data      = { bucket = "data", sa = google_service_account.pipelines.email }
    pipelines_models    = { bucket = "models", sa = google_service_account.pipelines.email }
    dataflow_data       = { bucket = "data", sa = google_service_account.dataflow.email }
    dataflow_temp       = { bucket = "pipelines", sa = google_service_account.dataflow.email }
    training_models     = { bucket = "models", sa = google_service_account.training.email }
    training_pipelines  = { bucket = "pipelines", sa = google_service_account.training.email }
  }
  bucket = google_storage_bucket.buckets[each.value.bucket].name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${each.value.sa}"
}

resource "google_storage_bucket_iam_member" "training_reads_data" {
  bucket = google_storage_bucket.buckets["data"].name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.training.email}"
}

resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each   = toset([google_service_account.pipelines.email, google_service_account.dataflow.email, google_service_account.training.email])
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${each.value}"
}
