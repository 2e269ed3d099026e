import assert from "node:assert/strict";
import { assertInvalid } from "../_shared/validate_testing.ts";
import { parseStartTrainingRequest } from "./validate.ts";

const hp = { learning_rate: 0.001, epochs: 3, batch_size: 32 };
const parse = (value: unknown) => parseStartTrainingRequest(JSON.stringify(value));

Deno.test("start-training: a valid request", () => {
  assert.deepEqual(parse({ model_name: "gpt-small:v2", hyperparameters: hp }), {
    modelName: "gpt-small:v2",
    hyperparameters: hp,
    datasetId: null,
  });
  const id = "6f1b3c2e-0000-4000-8000-00000000abcd";
  assert.equal(parse({ model_name: "m", hyperparameters: hp, dataset_id: id }).datasetId, id);
});

Deno.test("start-training: each bad field is named", () => {
  assertInvalid(() => parseStartTrainingRequest("nope"), "body");
  assertInvalid(() => parse({ hyperparameters: hp }), "model_name");
  assertInvalid(() => parse({ model_name: "bad name!", hyperparameters: hp }), "model_name");
  assertInvalid(() => parse({ model_name: "m" }), "hyperparameters");
  assertInvalid(() => parse({ model_name: "m", hyperparameters: [1] }), "hyperparameters");
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, learning_rate: 0 } }),
    "hyperparameters.learning_rate",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, learning_rate: -1 } }),
    "hyperparameters.learning_rate",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, epochs: 0 } }),
    "hyperparameters.epochs",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, epochs: 101 } }),
    "hyperparameters.epochs",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, epochs: 2.5 } }),
    "hyperparameters.epochs",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { epochs: 1, learning_rate: 0.1 } }),
    "hyperparameters.batch_size",
  );
  assertInvalid(
    () => parse({ model_name: "m", hyperparameters: { ...hp, momentum: 0.9 } }),
    "hyperparameters.momentum",
  );
  assertInvalid(() => parse({ model_name: "m", hyperparameters: hp, dataset_id: "x" }), "dataset_id");
});
