import { sharedValidator } from '../../server/validation/validate';

/** Mocha root hooks: compile the schema and profiles once, before any test's timer starts. */
export const mochaHooks = {
  beforeAll(this: Mocha.Context) {
    this.timeout(60000);
    sharedValidator();
  },
};
