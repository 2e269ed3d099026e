/** The pure input validator of start-training. */

import {
  invalidField,
  optionalUuid,
  parseJsonObject,
  rejectUnknownFields,
  requireInteger,
  requireNumber,
  requireObject,
  requireString,
} from "../_shared/validate.ts";

/** Model names: a letter or digit, then up to 127 of letters, digits, `.`, `_`, `:`, `/`, `-`. */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** The training settings start-training accepts. */
export interface Hyperparameters {
  /** Step size, greater than 0 and at most 1. */
  learning_rate: number;
  /** Passes over the dataset, 1-100. */
  epochs: number;
  /** Examples per step, 1-4096. */
  batch_size: number;
}

/** A valid start-training request. */
export interface StartTrainingInput {
  /** The base model to fine-tune, e.g. `gpt-small-v2`. */
  modelName: string;
  /** The training settings. */
  hyperparameters: Hyperparameters;
  /** A dataset of the caller's to train on, or `null`. */
  datasetId: string | null;
}

/** Parses the request body; throws 400 INVALID_REQUEST naming the first bad field. */
export function parseStartTrainingRequest(body: string): StartTrainingInput {
  const object = parseJsonObject(body);
  rejectUnknownFields(object, ["model_name", "hyperparameters", "dataset_id"]);
  const modelName = requireString(object, "model_name", {
    max: 128,
    pattern: {
      regex: MODEL_NAME,
      description: "letters, digits, '.', '_', ':', '/' or '-', starting alphanumeric",
    },
  });
  if (object.hyperparameters === undefined || object.hyperparameters === null) {
    throw invalidField("hyperparameters", "is required");
  }
  const hp = requireObject(object.hyperparameters, "hyperparameters");
  rejectUnknownFields(hp, ["learning_rate", "epochs", "batch_size"], "hyperparameters.");
  const hyperparameters: Hyperparameters = {
    learning_rate: requireNumber(
      hp,
      "learning_rate",
      { greaterThan: 0, max: 1 },
      "hyperparameters.learning_rate",
    ),
    epochs: requireInteger(hp, "epochs", { min: 1, max: 100 }, "hyperparameters.epochs"),
    batch_size: requireInteger(hp, "batch_size", { min: 1, max: 4096 }, "hyperparameters.batch_size"),
  };
  return { modelName, hyperparameters, datasetId: optionalUuid(object, "dataset_id") };
}
