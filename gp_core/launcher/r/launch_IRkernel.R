# gp's R kernel, started by launch_irkernel.py (which speaks gp's launch protocol and then execs this):
#   Rscript launch_IRkernel.R CONNECTION_FILE SPARK_MODE APP_NAME
# SPARK_MODE is lazy|eager|none: with SparkR installed, `spark` (a SparkSession) and `sc` are created at
# start-up (eager) or on first use (lazy, through active bindings); the Spark application is named APP_NAME.
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 3L) {
  stop("usage: launch_IRkernel.R CONNECTION_FILE SPARK_MODE APP_NAME")
}
connection_file <- args[[1L]]
spark_mode <- args[[2L]]
app_name <- args[[3L]]
if (!spark_mode %in% c("lazy", "eager", "none")) {
  stop(sprintf("spark mode '%s' is not one of lazy, eager, none", spark_mode))
}

find_sparkr <- function() {
  spark_home <- Sys.getenv("SPARK_HOME")
  if (nzchar(spark_home)) {
    lib <- file.path(spark_home, "R", "lib")
    if (dir.exists(file.path(lib, "SparkR"))) .libPaths(c(lib, .libPaths()))
  }
  requireNamespace("SparkR", quietly = TRUE)
}

start_spark <- function() {
  # SparkR's own session start; its `sparkR.session()` also sets the active session used by SparkR's functions.
  session <- SparkR::sparkR.session(appName = app_name)
  list(spark = session, sc = SparkR:::callJMethod(session, "sparkContext"))
}

if (spark_mode != "none") {
  if (!find_sparkr()) {
    message <- sprintf(
      "--spark-context-initialization-mode %s needs the SparkR package (not found; set SPARK_HOME)", spark_mode
    )
    if (spark_mode == "eager") {
      write(paste("gp launcher:", message), stderr())
      quit(save = "no", status = 1L)
    }
    write(paste("gp launcher:", message, "; the kernel starts without it"), stderr())
  } else if (spark_mode == "eager") {
    created <- start_spark()
    assign("spark", created$spark, envir = globalenv())
    assign("sc", created$sc, envir = globalenv())
  } else {
    cache <- new.env()
    lazy <- function(name) {
      force(name)
      function(value) {
        if (!missing(value)) stop(sprintf("%s is read-only", name))
        if (is.null(cache$created)) cache$created <- start_spark()
        cache$created[[name]]
      }
    }
    makeActiveBinding("spark", lazy("spark"), globalenv())
    makeActiveBinding("sc", lazy("sc"), globalenv())
  }
}

# An interrupt that arrives while no cell runs (a late click, SIGINT to the process group) would halt a
# non-interactive R; IRkernel's own handler takes those that arrive while code runs, so resume the rest.
withCallingHandlers(
  IRkernel::main(connection_file),
  interrupt = function(condition) {
    if (!is.null(findRestart("resume", condition))) invokeRestart("resume")
  }
)
