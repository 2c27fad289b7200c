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

  # What expires in the pipelines bucket: run artifacts under the pipeline root (root/), Dataflow staging and
  # temp files (dataflow/) and Cloud Build source archives (cloudbuild/). templates/ (the pipelines Cloud Build
  # compiles) stays, and registered models live in the models bucket (PipelineConfig.model_store).
  expiring_prefixes = ["root/", "dataflow/", "cloudbuild/"]

  accounts = {
    pipelines = "bertkeras Vertex AI pipelines (every pipeline step without its own account)"
    dataflow  = "bertkeras Dataflow workers"
    training  = "bertkeras training jobs (custom jobs on GPU / TPU)"
    build     = "bertkeras Cloud Build (images and pipeline templates)"
  }

  # Bucket-level access: each identity gets only the buckets it uses, at the least role that does.
  bucket_grants = {
    pipelines_root   = { bucket = "pipelines", account = "pipelines", role = "roles/storage.objectAdmin" } # run artifacts, staged templates, Dataflow staging
    pipelines_data   = { bucket = "data", account = "pipelines", role = "roles/storage.objectViewer" }     # steps read corpora and labelled data
    pipelines_models = { bucket = "models", account = "pipelines", role = "roles/storage.objectAdmin" }    # registration copies exports into the model store
    dataflow_root    = { bucket = "pipelines", account = "dataflow", role = "roles/storage.objectAdmin" }  # workers write records, temp and staging files
    dataflow_data    = { bucket = "data", account = "dataflow", role = "roles/storage.objectViewer" }      # workers read corpora and labelled data
    training_root    = { bucket = "pipelines", account = "training", role = "roles/storage.objectAdmin" }  # reads records, writes the model artifact
    training_data    = { bucket = "data", account = "training", role = "roles/storage.objectViewer" }      # records kept in the data bucket
    training_models  = { bucket = "models", account = "training", role = "roles/storage.objectViewer" }    # starts from pretrained models kept there
    build_source     = { bucket = "pipelines", account = "build", role = "roles/storage.objectViewer" }    # reads the staged source, checks a template is new
    build_templates  = { bucket = "pipelines", account = "build", role = "roles/storage.objectCreator" }   # uploads templates, never replaces one
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
        age            = var.pipeline_artifact_retention_days
        matches_prefix = local.expiring_prefixes
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

  # Untagged versions (layers of failed or superseded pushes) go after a week; tagged releases after
  # image_retention_days, except the newest images_kept of each image, which stay whatever their age (KEEP wins).
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s"
    }
  }
  cleanup_policies {
    id     = "delete-old-releases"
    action = "DELETE"
    condition {
      tag_state  = "TAGGED"
      older_than = "${var.image_retention_days * 86400}s"
    }
  }
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.images_kept
    }
  }

  depends_on = [google_project_service.apis]
}

# --- identities (least privilege; docs/deploy.md has the table) -----------------------------------------------------
resource "google_service_account" "accounts" {
  for_each     = local.accounts
  account_id   = "${var.prefix}-${each.key}"
  display_name = each.value
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
  member  = "serviceAccount:${google_service_account.accounts["pipelines"].email}"
}

resource "google_project_iam_member" "dataflow" {
  for_each = toset(["roles/dataflow.worker", "roles/logging.logWriter"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.accounts["dataflow"].email}"
}

resource "google_project_iam_member" "training" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.accounts["training"].email}"
}

# A build with its own account must log to Cloud Logging (cloudbuild.yaml: CLOUD_LOGGING_ONLY).
resource "google_project_iam_member" "build" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.accounts["build"].email}"
}

# The pipelines identity runs jobs as the two worker identities, and nothing else.
resource "google_service_account_iam_member" "pipelines_act_as" {
  for_each           = toset(["dataflow", "training"])
  service_account_id = google_service_account.accounts[each.key].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.accounts["pipelines"].email}"
}

# Who may start builds as the build identity (gcloud builds submit --service-account=...).
resource "google_service_account_iam_member" "build_submitters" {
  for_each           = toset(var.build_submitters)
  service_account_id = google_service_account.accounts["build"].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = local.bucket_grants
  bucket   = google_storage_bucket.buckets[each.value.bucket].name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.accounts[each.value.account].email}"
}

resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each   = toset(["pipelines", "dataflow", "training"])
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.accounts[each.key].email}"
}

# Pushes images; immutable tags keep it from replacing one.
resource "google_artifact_registry_repository_iam_member" "build_writer" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.accounts["build"].email}"
}

# Addresses of the accounts and grants before they were maps: state moves, nothing is recreated.
moved {
  from = google_service_account.pipelines
  to   = google_service_account.accounts["pipelines"]
}

moved {
  from = google_service_account.dataflow
  to   = google_service_account.accounts["dataflow"]
}

moved {
  from = google_service_account.training
  to   = google_service_account.accounts["training"]
}

moved {
  from = google_storage_bucket_iam_member.object_admin["pipelines_pipelines"]
  to   = google_storage_bucket_iam_member.grants["pipelines_root"]
}

moved {
  from = google_storage_bucket_iam_member.object_admin["pipelines_models"]
  to   = google_storage_bucket_iam_member.grants["pipelines_models"]
}

moved {
  from = google_storage_bucket_iam_member.object_admin["dataflow_temp"]
  to   = google_storage_bucket_iam_member.grants["dataflow_root"]
}

moved {
  from = google_storage_bucket_iam_member.object_admin["training_pipelines"]
  to   = google_storage_bucket_iam_member.grants["training_root"]
}

moved {
  from = google_storage_bucket_iam_member.training_reads_data
  to   = google_storage_bucket_iam_member.grants["training_data"]
}
