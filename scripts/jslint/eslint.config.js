// ESLint for the dashboard (tuneforge/app/static/ui/): browser ES modules, no build step.
// Run from the repository root by scripts/test.sh:
//   scripts/jslint/node_modules/.bin/eslint --config scripts/jslint/eslint.config.js tuneforge/app/static/ui
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["tuneforge/app/static/ui/**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: globals.browser,
    },
    rules: {
      "max-len": ["error", { code: 120 }],
      "max-statements-per-line": ["error", { max: 1 }],
    },
  },
];
